"""Paired bootstrap CI and permutation test of the CE-F1 difference between two systems."""

import numpy as np
import pytest

from asarg.evaluation.clinical_efficacy import ce_scores
from asarg.evaluation.significance import compare_systems, paired_bootstrap, paired_permutation_test

NAMES = [f"L{i}" for i in range(6)]


def systems(n=120, noise_a=0.05, noise_b=0.35, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.random((n, len(NAMES))) < 0.3
    a, b = ref.copy(), ref.copy()
    a[rng.random(a.shape) < noise_a] ^= True
    b[rng.random(b.shape) < noise_b] ^= True
    return a, b, ref


def test_bootstrap_ci_brackets_the_observed_difference():
    a, b, ref = systems()
    out = paired_bootstrap(a, b, ref, NAMES, n_resamples=300)
    diff = ce_scores(a, ref, NAMES)["f1_micro"] - ce_scores(b, ref, NAMES)["f1_micro"]
    assert out["difference"] == pytest.approx(diff)
    assert out["ci_low"] < diff < out["ci_high"]
    assert out["ci_low"] > 0  # A is clearly better


def test_bootstrap_equals_a_hand_written_percentile_bootstrap():
    a, b, ref = systems(n=40)
    out = paired_bootstrap(a, b, ref, NAMES, n_resamples=200, seed=3)
    # The same draws as scipy's percentile bootstrap: rng.integers over study indices, 200 x n.
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 40, size=(200, 40))
    diffs = [ce_scores(a[i], ref[i], NAMES)["f1_micro"] - ce_scores(b[i], ref[i], NAMES)["f1_micro"] for i in idx]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=0.02)


def test_permutation_test_detects_a_real_difference_and_not_a_null_one():
    a, b, ref = systems()
    assert paired_permutation_test(a, b, ref, NAMES, n_resamples=300)["p_value"] < 0.01
    same = paired_permutation_test(a, a, ref, NAMES, n_resamples=100)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    a2, b2, ref2 = systems(noise_a=0.2, noise_b=0.2, seed=1)
    assert paired_permutation_test(a2, b2, ref2, NAMES, n_resamples=300)["p_value"] > 0.05


def test_results_are_reproducible_with_a_seed():
    a, b, ref = systems(n=50)
    assert paired_bootstrap(a, b, ref, NAMES, n_resamples=100, seed=7) == paired_bootstrap(
        a, b, ref, NAMES, n_resamples=100, seed=7
    )


def test_compare_systems_on_report_text():
    refs = [
        "Mild cardiomegaly.",
        "Small left pleural effusion.",
        "No acute disease.",
        "Right lower lobe pneumonia.",
    ] * 5
    good = list(refs)
    bad = ["No acute disease."] * len(refs)
    out = compare_systems(good, bad, refs, n_resamples=200, labels=14)
    assert out["score_a"] == 1.0 and out["score_b"] < out["score_a"]
    assert out["bootstrap"]["ci_low"] > 0 and out["permutation"]["p_value"] < 0.05
    assert "R2Gen convention" in out["definition"]


def test_compare_systems_checks_lengths():
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        compare_systems(["a"], ["a", "b"], ["a", "b"])


def test_unknown_metric_raises():
    a, b, ref = systems(n=10)
    with pytest.raises(ValueError, match="metric="):
        paired_bootstrap(a, b, ref, NAMES, metric="auroc", n_resamples=10)
