"""`label_reports`: one entry point for both labelers, with input checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .constants import CHEXPERT_LABELS
from .text import is_readable

LABELERS = ("chexpert-rules", "chexbert")


def validate_reports(reports, name: str = "reports") -> list[str]:
    """A list of report strings, or a ValueError that names the first bad entry."""
    if isinstance(reports, (bytes, bytearray)):
        raise ValueError(f"`{name}` is bytes; decode it (e.g. `.decode('utf-8')`) and pass a list of report strings.")
    if isinstance(reports, str) or not isinstance(reports, Sequence | np.ndarray):
        raise ValueError(f"`{name}` must be a list of report strings, got {type(reports).__name__}.")
    for i, r in enumerate(reports):
        if not isinstance(r, str):
            raise ValueError(
                f"`{name}[{i}]` is {type(r).__name__} ({r!r:.60}), not a string. Pass the report text; use '' for a "
                "study without a report."
            )
    return list(reports)


def unreadable_reports(reports) -> list[int]:
    """Indices of the reports the labeler cannot read (`text.is_readable`): not blank, but fewer than half of their
    letters are English-alphabet letters (another script) or no letters at all. They come out as reports without
    findings, which makes "心脏增大。" (cardiomegaly) and "心脏无增大。" (no cardiomegaly) agree perfectly."""
    return [i for i, report in enumerate(validate_reports(reports)) if not is_readable(report)]


def label_reports(reports, labeler: str = "chexpert-rules", chexbert_path: str | None = None, **kwargs) -> np.ndarray:
    """Label reports with the 14 CheXpert observations: an (N, 14) float array in `CHEXPERT_LABELS` order with
    1 (positive), 0 (negative), -1 (uncertain) and nan (blank)."""
    reports = validate_reports(reports)
    if labeler == "chexpert-rules":
        from .engine import RuleLabeler

        rows = RuleLabeler().label_many(reports)
    elif labeler == "chexbert":
        if not chexbert_path:
            raise ValueError("labeler='chexbert' needs `chexbert_path`: a local CheXbert checkpoint (chexbert.pth).")
        from .chexbert import CheXbertLabeler

        rows = CheXbertLabeler(chexbert_path, **kwargs).label_many(reports)
    else:
        raise ValueError(f"Unknown labeler {labeler!r}; choose one of {LABELERS}.")
    return np.asarray(rows, dtype=float).reshape(len(reports), len(CHEXPERT_LABELS))
