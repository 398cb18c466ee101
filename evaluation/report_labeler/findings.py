"""The findings a report asserts, as training targets: the 14 CheXpert observations and, for the one-sided ones, the
side the report places them on ("Pleural Effusion (right)", "Pleural Effusion (left)").

A sided label is read sentence by sentence: a sentence that asserts the observation and names one side ("right",
"left") makes that side present; "bilateral", "bibasilar" or "both" make both present. A side the report never
places the finding on is absent when the finding is placed elsewhere, and unknown (-1, ignored by a loss) when a
sentence asserts the finding without a side or names both sides for different things.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .api import label_reports, validate_reports
from .constants import CHEXPERT_LABELS
from .engine import RuleLabeler
from .text import normalize, split_sentences

# The CheXpert observations that sit in one lung or pleural space (the others are central, diffuse or devices).
SIDED_OBSERVATIONS = (
    "Lung Opacity",
    "Lung Lesion",
    "Consolidation",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
)
SIDES = ("right", "left")
_SIDE = {side: re.compile(rf"\b{side}\b") for side in SIDES}
_BOTH = re.compile(r"\b(?:bilateral|bilaterally|bibasilar|bibasal|both)\b")


def findings_first(reports: Sequence[str]) -> list[str]:
    """Each report with its sentences in a fixed order, stable within each group: first the sentences that assert a
    support device, then those that assert another finding (positive or uncertain), then the rest (normal and negated
    statements); joined by single spaces. A training-text option (`asarg sft --report_order findings_first`): the
    report then opens with what the film shows, as a radiologist's "Lines and tubes" section does."""
    reports = validate_reports(reports)
    pieces = [split_sentences(report) for report in reports]
    flat = [sentence for piece in pieces for sentence in piece]
    if not flat:
        return [" ".join(piece) for piece in pieces]
    asserted = np.isin(label_reports(flat), (1, -1))
    devices, normal = CHEXPERT_LABELS.index("Support Devices"), CHEXPERT_LABELS.index("No Finding")
    other = np.delete(asserted, [devices, normal], axis=1).any(axis=1)
    rank = np.where(asserted[:, devices], 0, np.where(other, 1, 2))
    out, start = [], 0
    for piece in pieces:
        order = sorted(range(len(piece)), key=lambda k: rank[start + k])
        out.append(" ".join(piece[k] for k in order))
        start += len(piece)
    return out


def check_sided(observations: Sequence[str]) -> list[str]:
    """`observations` as a list, or a ValueError naming the first that is not a one-sided CheXpert observation."""
    observations = list(observations)
    for name in observations:
        if name not in SIDED_OBSERVATIONS:
            raise ValueError(
                f"{name!r} is not a one-sided CheXpert observation; choose from {list(SIDED_OBSERVATIONS)}."
            )
    if len(set(observations)) != len(observations):
        raise ValueError(f"finding sides repeat an observation: {observations}.")
    return observations


def finding_names(sided: Sequence[str] = ()) -> list[str]:
    """The finding labels in order: the 14 CheXpert observations, then each sided observation's right and left."""
    return [*CHEXPERT_LABELS, *(f"{name} ({side})" for name in check_sided(sided) for side in SIDES)]


def sided_labels(reports, sided: Sequence[str] = SIDED_OBSERVATIONS, labeler: RuleLabeler | None = None) -> np.ndarray:
    """(N, 2 * len(sided)) float array, per observation its right then its left: 1 present, 0 absent, -1 unknown."""
    reports = validate_reports(reports)
    return _sided_labels(reports, label_reports(reports), check_sided(sided), labeler or RuleLabeler())


def _sided_labels(reports: list[str], overall: np.ndarray, sided: list[str], labeler: RuleLabeler) -> np.ndarray:
    """`sided_labels` from the reports' own (N, 14) labels `overall`."""
    out = np.zeros((len(reports), 2 * len(sided)))
    columns = [CHEXPERT_LABELS.index(name) for name in sided]
    for i, report in enumerate(reports):
        if not any(overall[i, c] in (1, -1) for c in columns):
            continue  # nothing sided is asserted or doubted: every side absent
        sentences = [(s, labeler.label(s)) for s in split_sentences(normalize(report))]
        for j, (name, column) in enumerate(zip(sided, columns)):
            if overall[i, column] == -1:
                out[i, 2 * j : 2 * j + 2] = -1
            elif overall[i, column] == 1:
                out[i, 2 * j : 2 * j + 2] = _sides(name, sentences)
    return out


def _sides(name: str, sentences: list[tuple[str, dict]]) -> list[float]:
    placed, unplaced = set(), False
    for sentence, labels in sentences:
        if labels.get(name) != 1:
            continue
        named = {side for side in SIDES if _SIDE[side].search(sentence)}
        if _BOTH.search(sentence):
            placed |= set(SIDES)
        elif len(named) == 1:
            placed |= named
        else:
            unplaced = True  # no side, or both sides named in one sentence (which for what is unclear)
    return [1.0 if side in placed else (-1.0 if unplaced else 0.0) for side in SIDES]


def finding_label_rows(reports, sided: Sequence[str] = ()) -> np.ndarray:
    """(N, len(finding_names(sided))) int8 training targets: 1 present, 0 absent or not mentioned, -1 uncertain or
    unknown (ignored by the finding loss)."""
    reports = validate_reports(reports)
    values = label_reports(reports)
    rows = np.where(values == 1, 1, np.where(values == -1, -1, 0))
    if sided:
        rows = np.concatenate([rows, _sided_labels(reports, values, check_sided(sided), RuleLabeler())], 1)
    return rows.astype(np.int8)


__all__ = [
    "SIDED_OBSERVATIONS",
    "SIDES",
    "check_sided",
    "finding_label_rows",
    "finding_names",
    "findings_first",
    "sided_labels",
]
