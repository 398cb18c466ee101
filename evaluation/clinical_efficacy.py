"""Clinical-efficacy (CE) scores of generated reports: label both sides with CheXpert observations, then precision /
recall / F1 (micro, macro, example-based and per label). Pure numpy; the `evaluate` module in `metrics/chexpert_ce/`
and the `asarg evaluate` command are thin wrappers around `compute_ce`.

The definition is explicit and echoed in every result, because CE numbers in the literature differ by it:
- `labeler`: "chexpert-rules" (built-in rule-based labeler) or "chexbert" (a local CheXbert checkpoint);
- `uncertain`: "negative" (R2Gen / LLaVA-Rad "rrg": only 1 is positive) or "positive" (f1chexbert, "rrg+");
- `labels`: 14 (all CheXpert observations, incl. No Finding) or 5 (Atelectasis, Cardiomegaly, Consolidation, Edema,
  Pleural Effusion).
Blank (not mentioned) and negative are always 0. Default = the R2Gen convention: chexpert-rules, uncertain
negative, 14 labels.

Both labelers read English only. A report they cannot read (not blank, but fewer than half of its letters are
English-alphabet letters, e.g. Chinese text; see `report_labeler.unreadable_reports`) comes out as a report without
findings, so two unreadable reports always agree: every result counts them (`unreadable`) and a warning names the
first ones. Blank reports are readable (they state nothing).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

# One relative import of the labeler's package: the published metric holds this module and the labeler's modules
# side by side, with the package's __init__ as `report_labeler.py` (asarg.publish_metric).
from .report_labeler import (
    CHEXPERT_5_LABELS,
    CHEXPERT_LABELS,
    LABELERS,
    label_reports,
    unreadable_reports,
    validate_reports,
)

logger = logging.getLogger(__name__)

UNCERTAIN_CHOICES = ("negative", "positive")
LABEL_SET_CHOICES = (14, 5)


@dataclass(frozen=True)
class CEDefinition:
    labeler: str = "chexpert-rules"
    uncertain: str = "negative"
    labels: int = 14
    chexbert_path: str | None = None

    def __post_init__(self):
        if self.labeler not in LABELERS:
            raise ValueError(f"labeler={self.labeler!r} is not one of {LABELERS}.")
        if self.labeler == "chexbert" and not self.chexbert_path:
            raise ValueError("labeler='chexbert' needs chexbert_path: a local CheXbert checkpoint (chexbert.pth).")
        if self.uncertain not in UNCERTAIN_CHOICES:
            raise ValueError(f"uncertain={self.uncertain!r}: choose 'negative' (R2Gen) or 'positive'.")
        if self.labels not in LABEL_SET_CHOICES:
            raise ValueError(f"labels={self.labels!r}: choose 14 (all CheXpert observations) or 5.")

    @property
    def label_names(self) -> tuple[str, ...]:
        return CHEXPERT_LABELS if self.labels == 14 else CHEXPERT_5_LABELS

    def describe(self) -> str:
        convention = " (R2Gen convention)" if (self.uncertain, self.labels) == ("negative", 14) else ""
        return (
            f"CE over {self.labels} CheXpert labels, labeler={self.labeler}, positive = 1"
            f"{' or -1 (uncertain)' if self.uncertain == 'positive' else ''}; blank, negative"
            f"{'' if self.uncertain == 'positive' else ' and uncertain'} = 0{convention}"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["label_names"] = list(self.label_names)
        return d


def binarize(values: np.ndarray, uncertain: str = "negative") -> np.ndarray:
    """Labeler values (1, 0, -1, nan) -> 0/1 under the chosen reading of uncertain."""
    values = np.asarray(values, dtype=float)
    positive = values == 1
    if uncertain == "positive":
        positive |= values == -1
    return positive.astype(np.int8)


def _safe_div(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def ce_scores(pred: np.ndarray, ref: np.ndarray, label_names) -> dict:
    """P/R/F1 of binary (N, L) matrices, matching sklearn with zero_division=0: `micro` pools all cells, `macro`
    averages per-label scores, `example` averages per-report scores (sklearn's average='samples'; a report with no
    positives on either side scores 0, as in PromptMRG)."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != len(label_names):
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must both be (N, {len(label_names)}).")
    tp_l, fp_l, fn_l = (pred & ref).sum(0), (pred & ~ref).sum(0), (~pred & ref).sum(0)
    p_l, r_l, f_l = (
        _safe_div(tp_l, tp_l + fp_l),
        _safe_div(tp_l, tp_l + fn_l),
        _safe_div(2 * tp_l, 2 * tp_l + fp_l + fn_l),
    )
    tp, fp, fn = tp_l.sum(), fp_l.sum(), fn_l.sum()
    tp_e, npred_e, nref_e = (pred & ref).sum(1), pred.sum(1), ref.sum(1)
    out = {
        "precision_micro": float(_safe_div(tp, tp + fp)),
        "recall_micro": float(_safe_div(tp, tp + fn)),
        "f1_micro": float(_safe_div(2 * tp, 2 * tp + fp + fn)),
        "precision_macro": float(p_l.mean()),
        "recall_macro": float(r_l.mean()),
        "f1_macro": float(f_l.mean()),
        "precision_example": float(_safe_div(tp_e, npred_e).mean()),
        "recall_example": float(_safe_div(tp_e, nref_e).mean()),
        "f1_example": float(_safe_div(2 * tp_e, npred_e + nref_e).mean()),
    }
    out["per_label"] = {
        name: {
            "precision": float(p_l[j]),
            "recall": float(r_l[j]),
            "f1": float(f_l[j]),
            "support": int(ref[:, j].sum()),
            "predicted": int(pred[:, j].sum()),
        }
        for j, name in enumerate(label_names)
    }
    return out


def validate_batch(predictions, references) -> tuple[list[str], list[str]]:
    """Two lists of report strings of the same length (possibly empty), or a ValueError naming the first bad entry."""
    predictions = validate_reports(predictions, "predictions")
    references = validate_reports(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; CE compares reports of the same "
            "studies pairwise, so pass one prediction per reference, in the same order."
        )
    return predictions, references


def check_pair(predictions, references) -> tuple[list[str], list[str]]:
    """`validate_batch`, and at least one pair: what CE is computed over."""
    predictions, references = validate_batch(predictions, references)
    if not predictions:
        raise ValueError("No reports given: predictions and references are empty.")
    return predictions, references


def label_pair(predictions, references, definition: CEDefinition) -> tuple[np.ndarray, np.ndarray]:
    """Binary (N, L) matrices of both sides under `definition` (labels both sides in one labeler pass)."""
    predictions, references = check_pair(predictions, references)
    values = label_reports(
        predictions + references, labeler=definition.labeler, chexbert_path=definition.chexbert_path
    )
    return split_binary(values, len(predictions), definition)


def split_binary(values: np.ndarray, n: int, definition: CEDefinition) -> tuple[np.ndarray, np.ndarray]:
    """Labeler values of predictions + references (2N, 14) -> the two binary (N, L) matrices under `definition`."""
    cols = [CHEXPERT_LABELS.index(name) for name in definition.label_names]
    binary = binarize(values[:, cols], definition.uncertain)
    return binary[:n], binary[n:]


# The variants the literature reports, named as it names them. LLaVA-Rad (microsoft/LLaVA-Rad, llava/eval/rrg_eval)
# reports Micro-/Macro-F1-14 and -5 with uncertain as negative (its "rrg" mode) and the same with a "+" with uncertain
# as positive ("rrg+"); CheXagent's F1CheXbert table and f1chexbert count uncertain as positive (the "+" rows);
# R2Gen / R2GenCMN / COMG / ORID's CE F1 is Macro-F1-14 (uncertain negative) and their CE micro F1 Micro-F1-14.
CE_VARIANTS: tuple[tuple[str, int, str, str, str], ...] = (
    # (name, labels, uncertain, average, who reports it under that reading)
    ("Micro-F1-14", 14, "negative", "micro", "LLaVA-Rad; R2Gen-style CE micro-F1"),
    ("Macro-F1-14", 14, "negative", "macro", "LLaVA-Rad; R2Gen / R2GenCMN / COMG / ORID CE F1"),
    ("Micro-F1-5", 5, "negative", "micro", "LLaVA-Rad"),
    ("Macro-F1-5", 5, "negative", "macro", "LLaVA-Rad"),
    ("Micro-F1-14+", 14, "positive", "micro", "LLaVA-Rad (+); CheXagent / f1chexbert Micro-F1-14"),
    ("Macro-F1-14+", 14, "positive", "macro", "LLaVA-Rad (+); CheXagent / f1chexbert Macro-F1-14"),
    ("Micro-F1-5+", 5, "positive", "micro", "LLaVA-Rad (+); CheXagent / f1chexbert Micro-F1-5"),
    ("Macro-F1-5+", 5, "positive", "macro", "LLaVA-Rad (+); CheXagent / f1chexbert Macro-F1-5"),
)


def ce_variants(values: np.ndarray, n: int, labeler: str = "chexpert-rules", chexbert_path: str | None = None) -> list:
    """The eight CE_VARIANTS from one labeling of predictions + references (`values`, (2N, 14)): per variant its
    name, labels (14 / 5), uncertain (negative / positive), average (micro / macro), precision, recall, F1 and who
    reports it. Each is `ce_scores` under its `CEDefinition`: one computation, not a copy."""
    out, scores = [], {}
    for name, labels, uncertain, average, reported_by in CE_VARIANTS:
        definition = CEDefinition(labeler=labeler, uncertain=uncertain, labels=labels, chexbert_path=chexbert_path)
        if (labels, uncertain) not in scores:
            scores[labels, uncertain] = ce_scores(*split_binary(values, n, definition), definition.label_names)
        got = scores[labels, uncertain]
        out.append(
            {
                "name": name,
                "labels": labels,
                "uncertain": uncertain,
                "average": average,
                "precision": got[f"precision_{average}"],
                "recall": got[f"recall_{average}"],
                "f1": got[f"f1_{average}"],
                "reported_by": reported_by,
            }
        )
    return out


def format_variants_table(variants: list[dict], labeler: str = "chexpert-rules", markdown: bool = False) -> str:
    """The variants as one table (plain text, or Markdown for a README / model card)."""
    head = ("variant", "labels", "uncertain counted", "average", "F1", "reported as (in)")
    rows = [
        (v["name"], str(v["labels"]), v["uncertain"], v["average"], f"{v['f1']:.4f}", v["reported_by"])
        for v in variants
    ]
    note = (
        f"CE F1 variants, labeler={labeler} (the literature's numbers use CheXbert or the CheXpert labeler; compare "
        "like with like). Blank and negative are always 0."
    )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return note + "\n\n" + "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    return note + "\n" + "\n".join(lines)


def compute_ce(
    predictions,
    references,
    labeler: str = "chexpert-rules",
    uncertain: str = "negative",
    labels: int = 14,
    chexbert_path: str | None = None,
    variants: bool = False,
) -> dict:
    """CE scores of `predictions` against `references` (lists of report strings of the same studies). `variants`:
    also `"variants"`, the eight literature variants (`CE_VARIANTS`: Micro/Macro-F1-14/-5, uncertain negative and,
    with "+", positive) from the same labeling."""
    definition = CEDefinition(labeler=labeler, uncertain=uncertain, labels=int(labels), chexbert_path=chexbert_path)
    predictions, references = check_pair(predictions, references)
    values = label_reports(predictions + references, labeler=labeler, chexbert_path=chexbert_path)
    pred, ref = split_binary(values, len(predictions), definition)
    out = ce_scores(pred, ref, definition.label_names)
    if variants:
        out["variants"] = ce_variants(values, len(predictions), labeler, chexbert_path)
    out["definition"] = definition.describe()
    out["definition_args"] = definition.as_dict()
    out["num_reports"] = int(pred.shape[0])
    out["unreadable"] = count_unreadable(predictions, references)
    return out


def count_unreadable(predictions: list[str], references: list[str]) -> dict[str, int]:
    """How many reports of each side the labeler cannot read, with a warning that names the first ones."""
    found = {"predictions": unreadable_reports(predictions), "references": unreadable_reports(references)}
    if any(found.values()):
        sides = {"predictions": predictions, "references": references}
        first = [f"{side}[{i}] {sides[side][i]!r:.40}" for side, indices in found.items() for i in indices[:2]]
        logger.warning(
            "CE: the labeler could not read %d of %d predictions and %d of %d references (no English text: another "
            "script, or no letters), e.g. %s. They are labelled as reports without findings, so they agree with "
            "each other whatever they say; their scores mean nothing. Translate them or leave them out.",
            len(found["predictions"]),
            len(predictions),
            len(found["references"]),
            len(references),
            ", ".join(first),
        )
    return {side: len(indices) for side, indices in found.items()}
