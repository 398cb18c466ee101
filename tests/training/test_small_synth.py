"""The reproduction's building blocks at toy sizes: the specialist's training (Dice, resume after a crash), the vision
tower's pretraining, and arm checkpoints that differ only in their seg inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import xray_like

from asarg.experiments.steps import QUICK
from asarg.processing.synthcxr.dataset import read_manifest, write_dataset
from asarg.training import segmenter as seg_training
from asarg.training.small_synth import build_arm_checkpoints
from asarg.training.vision_pretraining import pretrain_vision_tower
from modeling_asarg import AsargForConditionalGeneration, AsargProcessor
from modeling_asarg.convert_cxas_weights import load_converted_segmenter

TOY = QUICK.spec  # the pipeline's own toy size
SEG = {"size": 32, "epochs": 2, "batch_size": 8, "widths": (4, 8), "feature_channels": 4}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, 30, seed=5, size=64)
    return root


@pytest.fixture(scope="module")
def trained_segmenter(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("segmenter")
    return out, seg_training.train_segmenter(synth, out, **SEG)


def test_segmenter_reports_dice_per_class_and_saves_a_loadable_segmenter(synth, trained_segmenter):
    out, summary = trained_segmenter
    names = seg_training.load_split(synth, "test", 32)[2]
    assert set(summary["dice"]) == set(names) and summary["split"] == "test" and 0 <= summary["mean_dice"] <= 1
    assert json.loads((out / "dice.json").read_text())["dice"] == summary["dice"]
    segmenter = load_converted_segmenter(out)
    assert segmenter.config.class_names == list(names) and segmenter.config.image_size == 32


def test_segmenter_inputs_are_what_the_processor_gives_the_segmenter(trained_segmenter, tokenizer):
    image = xray_like(40, 30, seed=2)
    processor = AsargProcessor.from_pretrained(build_toy_arms(trained_segmenter[0], tokenizer)["baseline"])
    expected = processor(images=image, text="<image>", return_tensors="np")["seg_pixel_values"][0]
    assert np.allclose(seg_training.segmenter_inputs(image, 32), expected, atol=1e-6)


def test_a_crash_costs_at_most_one_epoch_and_the_rerun_ends_identical(synth, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    seg_training.train_segmenter(synth, clean, **SEG)
    crashed, real_epoch, calls = tmp_path / "crashed", seg_training._train_epoch, []

    def crash_in_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_epoch(*args)

    monkeypatch.setattr(seg_training, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        seg_training.train_segmenter(synth, crashed, **SEG)
    monkeypatch.setattr(seg_training, "_train_epoch", real_epoch)
    seg_training.train_segmenter(synth, crashed, **SEG)  # resumes after epoch 1
    a, b = load_converted_segmenter(clean).state_dict(), load_converted_segmenter(crashed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vision_pretraining_saves_a_tower_and_its_scores(synth, tmp_path):
    metrics = pretrain_vision_tower(synth, tmp_path, TOY, epochs=1, batch_size=8)
    assert {"f1_micro", "f1_macro", "f1"} <= set(metrics) and len(metrics["f1"]) == 14
    assert (tmp_path / "vision_tower" / "config.json").is_file()


def build_toy_arms(segmenter_dir, tokenizer, out=None):
    from transformers import CLIPVisionModel

    from asarg.training.small_synth import vision_config

    out = out or segmenter_dir / "arms"
    if not (out / "baseline").is_dir():
        CLIPVisionModel(vision_config(TOY)).save_pretrained(segmenter_dir / "tower")
        reports = ["The heart is normal.", "Small left pleural effusion.", "Cardiomegaly."] * 5
        build_arm_checkpoints(out, reports, segmenter_dir / "tower", segmenter_dir, spec=TOY)
    return {arm: out / arm for arm in ("baseline", "features", "maps", "features+maps")}


def test_arms_share_every_weight_but_the_zero_seg_columns(trained_segmenter, tokenizer):
    arms = build_toy_arms(trained_segmenter[0], tokenizer)
    models = {arm: AsargForConditionalGeneration.from_pretrained(path).eval() for arm, path in arms.items()}
    base = models["baseline"].state_dict()
    for arm, model in models.items():
        state = model.state_dict()
        assert all(torch.equal(state[k], base[k]) for k in base), arm
        extra = set(state) - set(base)
        assert extra == (set() if arm == "baseline" else {"model.multi_modal_projector.seg_linear.weight"}), arm
        assert all(state[k].abs().max() == 0 for k in extra)
    processor = AsargProcessor.from_pretrained(arms["features+maps"])
    inputs = processor(images=xray_like(32, 32), text="<image> The heart", return_tensors="pt")
    with torch.no_grad():
        logits = {arm: models[arm](**inputs).logits for arm in ("baseline", "features+maps")}
    assert torch.allclose(logits["baseline"], logits["features+maps"], atol=1e-6)  # seg inert until trained


def test_the_reports_tokenizer_is_trained_on_the_reports(trained_segmenter, tokenizer, synth):
    arms = build_toy_arms(trained_segmenter[0], tokenizer)
    processor = AsargProcessor.from_pretrained(arms["baseline"])
    assert len(processor.tokenizer("Small left pleural effusion.")["input_ids"]) <= 8
    assert read_manifest(synth, "train")  # the fixture data exist for the other tests
