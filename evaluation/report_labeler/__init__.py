"""Rule-based CheXpert-style report labeler (pure Python; imports nothing of ours outside this package).

>>> from asarg.evaluation.report_labeler import RuleLabeler
>>> RuleLabeler().label("No effusion, consolidation or pneumothorax.")["Pleural Effusion"]
0.0
"""

from .api import label_reports, unreadable_reports, validate_reports
from .constants import CHEXPERT_5_LABELS, CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from .engine import RuleLabeler

__all__ = [
    "CHEXPERT_5_LABELS",
    "CHEXPERT_LABELS",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "RuleLabeler",
    "label_reports",
    "unreadable_reports",
    "validate_reports",
]
