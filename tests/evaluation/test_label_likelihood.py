"""The teacher-forced label endpoint: only the sentence's tokens count, rows agree with the model's own loss, padding
and batching change nothing, the sentences say what their observation says, and the AUROC of a hand case."""

import numpy as np
import pytest
import torch
from PIL import Image

from asarg.evaluation.label_likelihood import (
    IGNORE,
    LABEL_SENTENCES,
    evaluate_label_likelihood,
    label_aurocs,
    label_scores,
    sentence_log_likelihoods,
    sentence_rows,
)
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports
from asarg.processing.inference import prompt_text
from asarg.processing.synthcxr.dataset import read_manifest

SENTENCES = ["No pneumothorax.", "There is a small right pleural effusion with more words here."]


@pytest.fixture
def model_and_images(make_asarg, synthcxr):
    model, processor = make_asarg(live_seg=True)
    records = read_manifest(synthcxr, "train")[:3]
    images = [Image.open(synthcxr / rec["image"]).convert("L") for rec in records]
    return model, processor, images, [rec["findings_text"] for rec in records]


def test_labels_keep_the_sentence_tokens_only(model_and_images):
    model, processor, images, _ = model_and_images
    rows = sentence_rows(processor, SENTENCES, images[0])
    prompt_only = processor(images=[images[0]], text=[prompt_text(processor).rstrip()])["input_ids"][0]
    tokenizer = processor.tokenizer
    for i, sentence in enumerate(SENTENCES):
        kept = rows["labels"][i][rows["labels"][i] != IGNORE]
        assert tokenizer.decode(kept).strip() == sentence  # exactly the sentence ...
        assert (rows["labels"][i, : len(prompt_only)] == IGNORE).all()  # ... never the prompt or the image tokens
        assert (rows["labels"][i][rows["attention_mask"][i] == 0] == IGNORE).all()  # ... nor the padding
    assert (rows["attention_mask"][0] == 0).any()  # the short sentence was padded


def test_a_rows_score_is_minus_the_models_own_loss_times_its_tokens(model_and_images):
    model, processor, images, _ = model_and_images
    ll = sentence_log_likelihoods(model, processor, images[:2], SENTENCES, image_batch_size=2)
    assert ll.shape == (2, 2) and (ll < 0).all()
    text = prompt_text(processor)
    for i in range(2):
        for j, sentence in enumerate(SENTENCES):
            inputs = processor(images=[images[i]], text=[f"{text.rstrip()} {sentence}"], return_tensors="pt")
            labels = sentence_rows(processor, [sentence], images[i])["labels"]
            with torch.no_grad():
                loss = model(**inputs, labels=labels).loss  # mean over the tokens labels keep (shifted inside)
            assert ll[i, j] == pytest.approx(-loss.item() * int((labels != IGNORE).sum()), rel=1e-4, abs=1e-4)
    # Batching and padding change nothing: one image at a time, one sentence at a time.
    alone = [[sentence_log_likelihoods(model, processor, [im], [s])[0, 0] for s in SENTENCES] for im in images[:2]]
    np.testing.assert_allclose(ll, alone, rtol=1e-4, atol=1e-4)


def test_seg_inputs_reach_the_scores(model_and_images):
    model, processor, images, _ = model_and_images
    base = sentence_log_likelihoods(model, processor, images[:2], SENTENCES)
    maps = torch.zeros(2, model.config.num_seg_classes, 8, 8)
    removed = sentence_log_likelihoods(model, processor, images[:2], SENTENCES, seg_maps=maps)
    assert not np.allclose(base, removed)  # live seg columns: removing the maps moves the likelihoods


def test_label_scores_and_the_endpoint_have_one_column_per_observation(model_and_images):
    model, processor, images, references = model_and_images
    scores = label_scores(model, processor, images)
    assert scores.shape == (3, len(LABEL_SENTENCES)) and np.isfinite(scores).all()
    pos, neg = LABEL_SENTENCES["Support Devices"]
    ll = sentence_log_likelihoods(model, processor, images, [*pos, *neg])
    j = list(LABEL_SENTENCES).index("Support Devices")
    expected = np.logaddexp.reduce(ll[:, : len(pos)], axis=1) - ll[:, len(pos)]
    np.testing.assert_allclose(scores[:, j], expected, rtol=1e-5, atol=1e-5)
    result = evaluate_label_likelihood(model, processor, images, references)
    assert np.array(result["scores"]).shape == (3, len(LABEL_SENTENCES))
    assert result["labels"] == list(LABEL_SENTENCES)
    assert set(result["labels_in_macro"]) <= set(result["labels"])


def test_every_sentence_says_its_observation():
    for label, (positives, negatives) in LABEL_SENTENCES.items():
        j = CHEXPERT_LABELS.index(label)
        assert (label_reports(list(positives))[:, j] == 1).all(), label
        assert (label_reports(list(negatives))[:, j] == 0).all(), label
    assert "No Finding" not in LABEL_SENTENCES


def test_auroc_of_a_hand_case():
    # A: perfect ranking (1.0); B: positives 0.9, 0.4 against negatives 0.4, 0.1 -> 3.5 of 4 pairs (0.875);
    # C: one class only, left out of the macro mean.
    scores = np.array([[3.0, 0.9, 1.0], [2.0, 0.4, 2.0], [-1.0, 0.4, 3.0], [-2.0, 0.1, 4.0]])
    truth = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    out = label_aurocs(scores, truth, ["A", "B", "C"])
    assert out["per_label"] == {"A": 1.0, "B": 0.875, "C": None}
    assert out["macro"] == pytest.approx(0.9375) and out["labels_in_macro"] == ["A", "B"]
    assert out["positives"] == {"A": 2, "B": 2, "C": 0}
    assert label_aurocs(-scores, truth, ["A", "B", "C"])["per_label"]["A"] == 0.0
