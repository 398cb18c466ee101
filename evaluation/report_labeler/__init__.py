"""Rule-based CheXpert-style report labeler (pure Python; imports nothing of ours outside this package).

Its modules import each other relatively and only by module name, so the published `evaluate` metric can hold them
side by side, with this file as `report_labeler.py` (`asarg.publish_metric`).

>>> from asarg.evaluation.report_labeler import RuleLabeler
>>> RuleLabeler().label("No effusion, consolidation or pneumothorax.")["Pleural Effusion"]
0.0
"""

from .api import LABELERS, label_reports, unreadable_reports, validate_reports
from .constants import CHEXPERT_5_LABELS, CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from .engine import RuleLabeler

__all__ = [
    "CHEXPERT_5_LABELS",
    "CHEXPERT_LABELS",
    "LABELERS",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "RuleLabeler",
    "label_reports",
    "unreadable_reports",
    "validate_reports",
]
