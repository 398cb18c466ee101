"""Paired significance tests for "system A vs system B on the same studies": a bootstrap confidence interval of the
CE-F1 difference and a permutation-test p-value, both from scipy, resampling studies (not labels).

Reports are labelled once; each resample only re-scores binary matrices, so 1,000-10,000 resamples take seconds.

For an arm against a baseline trained over several seeds (the ablation), `hierarchical_bootstrap` resamples seeds,
then test studies within each drawn seed, so both the run-to-run spread and the test-set sampling are in its
interval; `seeds_t_test` (studies fixed) and `pooled_permutation_test` (runs fixed) are the one-level tests beside it.
They take a run metric (`mean_metric`, `micro_f1_metric`, `macro_auroc_metric`) of per-study outputs.
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


# ----------------------------------------------------------------------------------------------------------------------
# Runs x studies: an arm against a baseline over several training seeds, each scored on the same test studies
# ----------------------------------------------------------------------------------------------------------------------
#
# A run metric is a function `metric(outputs, weights) -> (D,)`: `outputs` are one run's per-study outputs (an array
# whose first axis is the study), `weights` a (D, N) array of study multiplicities (a bootstrap draw of studies is the
# number of times each study was drawn; all ones is the test set itself). Every metric below is a weighted statistic,
# so D draws are scored in one vectorised call.


def mean_metric() -> callable:
    """The run metric "mean of a per-study value" (log-likelihood, a 0/1 correctness, ...): `outputs` are (N,)."""

    def metric(outputs, weights):
        return weights @ np.asarray(outputs, dtype=float) / weights.sum(1)

    return metric


def micro_f1_metric(reference) -> callable:
    """CE micro-F1 of a run's binary predictions `outputs` (N, L) against the binary `reference` (N, L)."""
    ref = np.asarray(reference, dtype=bool)

    def metric(outputs, weights):
        pred = np.asarray(outputs, dtype=bool)
        tp, fp, fn = ((pred & ref).sum(1), (pred & ~ref).sum(1), (~pred & ref).sum(1))
        tp, errors = weights @ tp, weights @ (fp + fn)
        return np.divide(2 * tp, 2 * tp + errors, out=np.zeros(len(weights)), where=(2 * tp + errors) > 0)

    return metric


def weighted_auroc(scores, labels, weights) -> np.ndarray:
    """AUROC of `scores` (N,) for binary `labels` (N,) under study multiplicities `weights` (D, N) -> (D,): the
    weighted share of (positive, negative) pairs ordered correctly, ties counting half (Mann-Whitney). NaN where a
    draw has no positive or no negative study."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], weights[:, order]
    pos, neg = w * y, w * ~y
    # Ties: every study of a tie group sees the negatives strictly below the group, plus half of the group's own.
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(s)]))
    neg_in_group = np.add.reduceat(neg, starts, axis=1)
    below = np.cumsum(neg_in_group, axis=1) - neg_in_group
    correct = (pos * (below[:, group] + 0.5 * neg_in_group[:, group])).sum(1)
    pairs = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, correct / pairs, np.nan)


def macro_auroc_metric(labels) -> callable:
    """Mean per-label AUROC of a run's scores `outputs` (N, L) for the binary `labels` (N, L), over the labels with
    both classes among the test studies (a label whose draw lacks a class is left out of that draw's mean)."""
    labels = np.asarray(labels, dtype=bool)
    both = np.flatnonzero(labels.any(0) & ~labels.all(0))
    if not len(both):
        raise ValueError("No label has both classes among the studies: the macro AUROC is undefined.")

    def metric(outputs, weights):
        outputs = np.asarray(outputs, dtype=float)
        per_label = np.stack([weighted_auroc(outputs[:, j], labels[:, j], weights) for j in both])
        with np.errstate(invalid="ignore"):
            return np.nanmean(per_label, axis=0) if np.isfinite(per_label).any() else np.full(len(weights), np.nan)

    return metric


def _run_values(runs, metric, weights) -> np.ndarray:
    return np.array([metric(run, weights)[0] for run in runs])


def hierarchical_bootstrap(
    arm,
    baseline,
    metric,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    seed: int | None = 0,
    chunk: int = 250,
) -> dict:
    """Two-stage paired bootstrap of mean over seeds of metric(arm run) - metric(baseline run), treating both the
    training runs and the test studies as random.

    `arm[s]`, `baseline[s]`: the per-study outputs of seed s's two runs (the same N test studies, in the same order;
    the two runs of a seed share their initial weights and data order). `metric(outputs, weights) -> (D,)`: a run
    metric over study multiplicities (`mean_metric`, `micro_f1_metric`, `macro_auroc_metric`). Each resample draws S
    seeds with replacement, then for each drawn seed N studies with replacement, the same studies for its arm and
    baseline run (paired); the statistic is the mean over the drawn seeds of the paired differences. Resampling at
    both levels counts the study noise once more than it occurs (it is in the seeds' spread already), so the interval
    errs wide when study noise dominates; when the seeds' spread dominates, a percentile interval over few seeds is a
    little short (measured on null cases with 8 seeds: 95% intervals covered 0.92, one-sided p < 0.05 in 5.2%; with
    study noise dominating, 0.99 and 1.8%; `tests/evaluation/test_hierarchical_bootstrap.py`).

    Returns `delta` (the observed mean difference), `ci_low` / `ci_high` (percentile), `p_one_sided` (for "arm >
    baseline": (1 + #{resampled delta <= 0}) / (1 + n_resamples)), the per-seed differences, `seeds` and `studies`.
    """
    arm, baseline = list(arm), list(baseline)
    if len(arm) != len(baseline) or not arm:
        raise ValueError(f"Give one arm run and one baseline run per seed; got {len(arm)} and {len(baseline)}.")
    n = len(np.asarray(arm[0]))
    if any(len(np.asarray(run)) != n for run in arm + baseline):
        raise ValueError("Every run must be scored on the same test studies (same first-axis length).")
    n_seeds = len(arm)
    ones = np.ones((1, n))
    per_seed = _run_values(arm, metric, ones) - _run_values(baseline, metric, ones)
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    for first in range(0, n_resamples, chunk):
        d = min(chunk, n_resamples - first)
        drawn = rng.integers(0, n_seeds, size=(d, n_seeds))  # stage 1: seeds
        total = np.zeros(d)
        for k in range(n_seeds):  # stage 2: studies, drawn anew for every drawn seed, shared by its two runs
            rows = rng.integers(0, n, size=(d, n))
            flat = (rows + n * np.arange(d)[:, None]).ravel()
            weights = np.bincount(flat, minlength=d * n).reshape(d, n).astype(float)
            for s in np.unique(drawn[:, k]):
                mine = drawn[:, k] == s
                total[mine] += metric(arm[s], weights[mine]) - metric(baseline[s], weights[mine])
        deltas[first : first + d] = total / n_seeds
    alpha = 1 - confidence_level
    finite = deltas[np.isfinite(deltas)]
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "delta": float(per_seed.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_one_sided": float((1 + (finite <= 0).sum()) / (1 + len(finite))),
        "per_seed": [float(v) for v in per_seed],
        "seeds": n_seeds,
        "studies": n,
        "confidence_level": confidence_level,
        "n_resamples": n_resamples,
    }


def seeds_t_test(arm, baseline, metric) -> dict:
    """Seeds as the unit, studies fixed: a one-sided paired t-test of the per-seed run metrics (arm > baseline)."""
    ones = np.ones((1, len(np.asarray(arm[0]))))
    a, b = _run_values(arm, metric, ones), _run_values(baseline, metric, ones)
    diff = a - b
    p = float(stats.ttest_rel(a, b, alternative="greater").pvalue) if len(diff) > 1 and diff.std() > 0 else np.nan
    return {"delta": float(diff.mean()), "wins": int((diff > 0).sum()), "seeds": len(diff), "p_one_sided": p}


def pooled_permutation_test(arm, baseline, metric, n_resamples: int = 1000, seed: int | None = 0) -> dict:
    """Studies as the unit, runs fixed: a one-sided paired permutation test of the mean over seeds of the run-metric
    difference, swapping a seed's arm and baseline outputs on a random subset of its studies (the run-to-run spread
    of the seeds is not part of its null)."""
    arm = [np.asarray(run) for run in arm]
    baseline = [np.asarray(run) for run in baseline]
    ones = np.ones((1, len(arm[0])))

    def statistic(arms, bases):
        return float(np.mean(_run_values(arms, metric, ones) - _run_values(bases, metric, ones)))

    observed = statistic(arm, baseline)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_resamples):
        swapped_a, swapped_b = [], []
        for a, b in zip(arm, baseline):
            swap = (rng.random(len(a)) < 0.5).reshape(-1, *([1] * (a.ndim - 1)))
            swapped_a.append(np.where(swap, b, a))
            swapped_b.append(np.where(swap, a, b))
        hits += statistic(swapped_a, swapped_b) >= observed
    return {"delta": observed, "p_one_sided": (1 + hits) / (1 + n_resamples), "n_resamples": n_resamples}
