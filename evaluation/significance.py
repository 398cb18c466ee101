"""Paired significance tests for "system A vs system B on the same studies": a bootstrap confidence interval of the
CE-F1 difference and a permutation-test p-value, both from scipy, resampling studies (not labels).

Reports are labelled once; each resample only re-scores binary matrices, so 1,000-10,000 resamples take seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from asarg.evaluation.clinical_efficacy import CEDefinition, ce_scores, check_pair, label_pair

METRICS = ("f1_micro", "f1_macro", "f1_example", "precision_micro", "recall_micro")


def _score_fn(ref: np.ndarray, metric: str, label_names):
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}.")

    def score(pred_rows: np.ndarray, rows: np.ndarray) -> float:
        return ce_scores(pred_rows, ref[rows], label_names)[metric]

    return score


def paired_bootstrap(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    ref: np.ndarray,
    label_names,
    metric: str = "f1_micro",
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int | None = 0,
) -> dict:
    """Percentile bootstrap CI of score(A) - score(B): studies are resampled with replacement, the same draw for both
    systems (paired)."""
    pred_a, pred_b = np.asarray(pred_a, dtype=bool), np.asarray(pred_b, dtype=bool)
    score = _score_fn(np.asarray(ref, dtype=bool), metric, label_names)

    def diff(rows):
        rows = np.asarray(rows, dtype=int)
        return score(pred_a[rows], rows) - score(pred_b[rows], rows)

    n = pred_a.shape[0]
    res = stats.bootstrap(
        (np.arange(n),),
        diff,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return {
        "difference": float(diff(np.arange(n))),
        "ci_low": float(res.confidence_interval.low),
        "ci_high": float(res.confidence_interval.high),
        "confidence_level": confidence_level,
        "n_resamples": n_resamples,
    }


def paired_permutation_test(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    ref: np.ndarray,
    label_names,
    metric: str = "f1_micro",
    n_resamples: int = 1000,
    seed: int | None = 0,
) -> dict:
    """Two-sided paired permutation test of score(A) - score(B): under H0 the two systems' outputs for a study are
    exchangeable, so each permutation swaps A and B on a random subset of studies."""
    pred_a, pred_b = np.asarray(pred_a, dtype=bool), np.asarray(pred_b, dtype=bool)
    n = pred_a.shape[0]
    stacked = np.concatenate([pred_a, pred_b])
    score = _score_fn(np.asarray(ref, dtype=bool), metric, label_names)

    # x[i] / y[i] index A's or B's row of study i in `stacked`; permutation_type="samples" swaps them pairwise.
    def diff(x, y):
        return score(stacked[x], x % n) - score(stacked[y], y % n)

    res = stats.permutation_test(
        (np.arange(n), np.arange(n) + n),
        diff,
        permutation_type="samples",
        vectorized=False,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return {"difference": float(res.statistic), "p_value": float(res.pvalue), "n_resamples": n_resamples}


def compare_systems(
    predictions_a,
    predictions_b,
    references,
    metric: str = "f1_micro",
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int | None = 0,
    **definition,
) -> dict:
    """Label the reports of two systems and their references once, then run both paired tests on `metric`.
    `definition` takes the CE arguments (labeler, uncertain, labels, chexbert_path)."""
    check_pair(predictions_a, references)
    check_pair(predictions_b, references)
    ce = CEDefinition(**definition)
    a, ref = label_pair(predictions_a, references, ce)
    b, _ = label_pair(predictions_b, references, ce)
    names = ce.label_names
    return {
        "metric": metric,
        "definition": ce.describe(),
        "score_a": ce_scores(a, ref, names)[metric],
        "score_b": ce_scores(b, ref, names)[metric],
        "bootstrap": paired_bootstrap(a, b, ref, names, metric, n_resamples, confidence_level, seed),
        "permutation": paired_permutation_test(a, b, ref, names, metric, n_resamples, seed),
    }
