"""NLG metrics from pycocoevalcap: hand-checked BLEU-1 and ROUGE-L, METEOR via Java, input errors."""

import shutil

import pytest

from asarg.evaluation.nlg_metrics import compute_nlg, r2gen_normalize


def test_r2gen_normalisation():
    assert r2gen_normalize("Heart size is normal.  No effusion!\n") == "heart size is normal . no effusion"


def test_bleu_1_by_hand():
    # hyp "the heart is enlarged" vs ref "the heart is normal": 3 of 4 unigrams match, equal lengths (BP = 1).
    out = compute_nlg(["the heart is enlarged"], ["the heart is normal"], metrics=("bleu",))
    assert out["BLEU_1"] == pytest.approx(0.75, abs=1e-6)
    assert out["BLEU_2"] == pytest.approx((0.75 * 2 / 3) ** 0.5, abs=1e-6)


def test_rouge_l_by_hand():
    # LCS("no pleural effusion", "no large pleural effusion") = 3; P = 1, R = 3/4; pycocoevalcap beta = 1.2.
    out = compute_nlg(["no pleural effusion"], ["no large pleural effusion"], metrics=("rouge_l",))
    p, r, beta = 1.0, 0.75, 1.2
    assert out["ROUGE_L"] == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p), abs=1e-6)


def test_cider_rewards_the_matching_report():
    refs = ["the heart is normal . no effusion", "mild cardiomegaly", "small left pneumothorax"]
    same = compute_nlg(refs, refs, metrics=("cider",))["CIDEr"]
    other = compute_nlg(refs[1:] + refs[:1], refs, metrics=("cider",))["CIDEr"]
    assert same > 1.0 > other


def test_multiple_references_and_errors():
    out = compute_nlg(["no effusion"], [["no effusion", "no pleural effusion"]], metrics=("bleu",))
    assert out["BLEU_1"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_nlg(["a", "b"], ["a"], metrics=("bleu",))
    with pytest.raises(ValueError, match=r"predictions\[0\]"):
        compute_nlg([None], ["a"], metrics=("bleu",))
    with pytest.raises(ValueError, match="Unknown NLG metrics"):
        compute_nlg(["a"], ["a"], metrics=("bertscore",))


@pytest.mark.slow
def test_meteor_runs_the_java_scorer():
    if shutil.which("java") is None:
        pytest.fail("METEOR needs Java; .ci/run installs a JRE.")
    out = compute_nlg(
        ["the heart is normal", "no effusion"], ["the heart is normal", "small effusion"], metrics=("meteor",)
    )
    assert 0.3 < out["METEOR"] < 1.0
