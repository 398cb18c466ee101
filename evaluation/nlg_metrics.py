"""NLG metrics as the report-generation literature computes them: BLEU-1..4, METEOR, ROUGE-L and CIDEr from
pycocoevalcap (the scorers R2Gen, R2GenCMN, COMG and ORID use). METEOR runs pycocoevalcap's Java jar, so it needs a
Java runtime on PATH. `evaluate.load("bleu")` is not used: it needs the Hub.

Text is normalised the way R2Gen prepares IU X-ray / MIMIC-CXR reports before scoring (lower case, punctuation other
than the period dropped, periods as separate tokens), so scores are comparable to those tables.
"""

from __future__ import annotations

import re
import shutil

from asarg.evaluation.report_labeler import validate_reports

METRICS = ("bleu", "meteor", "rouge_l", "cider")
_NOT_KEPT = re.compile(r"[^a-z0-9. ]+")
_PERIOD = re.compile(r"\s*\.\s*")
_SPACES = re.compile(r"\s+")


def r2gen_normalize(text: str) -> str:
    """ "Heart size is normal.  No effusion!" -> "heart size is normal . no effusion" (R2Gen-style tokens)."""
    t = _NOT_KEPT.sub(" ", text.lower().replace("\n", " "))
    t = _PERIOD.sub(" . ", t)
    return _SPACES.sub(" ", t).strip(" .")


def _as_reference_lists(references) -> list[list[str]]:
    if isinstance(references, str) or not hasattr(references, "__len__"):
        raise ValueError("`references` must be a list with one report (or a list of reports) per prediction.")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else ref
        if isinstance(refs, str) or not isinstance(refs, list | tuple) or not refs:
            raise ValueError(f"`references[{i}]` must be a report string or a non-empty list of report strings.")
        out.append(validate_reports(list(refs), f"references[{i}]"))
    return out


def compute_nlg(predictions, references, metrics=METRICS, normalize: bool = True) -> dict[str, float]:
    """Corpus-level scores: {"BLEU_1".."BLEU_4", "METEOR", "ROUGE_L", "CIDEr"} (those asked for in `metrics`).

    `references[i]` is the reference report of prediction i, or a list of references for it."""
    predictions = validate_reports(predictions, "predictions")
    refs = _as_reference_lists(references)
    if len(predictions) != len(refs):
        raise ValueError(f"Got {len(predictions)} predictions but {len(refs)} references; pass one per prediction.")
    if not predictions:
        raise ValueError("No reports given: predictions and references are empty.")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"Unknown NLG metrics {sorted(unknown)}; choose from {METRICS}.")
    prep = r2gen_normalize if normalize else (lambda s: s)
    # pycocoevalcap scorers take {id: [text]} dicts; an empty hypothesis would crash BLEU, so it becomes a period.
    res = {i: [prep(p) or "."] for i, p in enumerate(predictions)}
    gts = {i: [prep(r) or "." for r in rs] for i, rs in enumerate(refs)}
    out: dict[str, float] = {}
    for name in metrics:
        scorer, keys = _scorer(name)
        # Bleu prints its n-gram counts unless verbose=0; the other scorers take no such argument.
        score, _ = scorer.compute_score(gts, res, verbose=0) if name == "bleu" else scorer.compute_score(gts, res)
        scores = score if isinstance(score, list) else [score]
        out.update({k: float(v) for k, v in zip(keys, scores, strict=True)})
        if name == "meteor":
            del scorer  # stops the Java process
    return out


def _scorer(name: str):
    if name == "bleu":
        from pycocoevalcap.bleu.bleu import Bleu

        return Bleu(4), ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4"]
    if name == "meteor":
        if shutil.which("java") is None:
            raise RuntimeError(
                "METEOR needs a Java runtime (pycocoevalcap runs meteor-1.5.jar): install a JRE (e.g. "
                "`apt-get install default-jre-headless`) or leave 'meteor' out of `metrics`."
            )
        from pycocoevalcap.meteor.meteor import Meteor

        return Meteor(), ["METEOR"]
    if name == "rouge_l":
        from pycocoevalcap.rouge.rouge import Rouge

        return Rouge(), ["ROUGE_L"]
    from pycocoevalcap.cider.cider import Cider

    return Cider(), ["CIDEr"]
