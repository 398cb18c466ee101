"""Issue 22's ablation: the whole pipeline at toy sizes (per-run endpoint files, per-seed initial weights shared by a
seed's arms, the random-tower regime, resumability, the look and its decision), and its parts: the stopping rule,
the run command, the inference-time variants and `asarg reproduce --ablation`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from asarg.experiments import ablation
from asarg.experiments.ablation import QUICK_ABLATION, AblationSettings, decide, run_ablation, seg_variant


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


@pytest.mark.slow
def test_the_quick_ablation_end_to_end_then_resumes_without_training(tmp_path, monkeypatch):
    settings = replace(QUICK_ABLATION, arms=("baseline", "features+maps"))
    out = tmp_path / "ablation"
    summary = run_ablation(out, settings)

    for regime in ("pretrained", "random"):
        for seed in (0, 1):
            for arm in ("baseline", "features+maps"):
                run = out / "runs" / regime / f"seed{seed}-{arm}"
                assert (run / "model.safetensors").is_file() and (run / "checksums.sha256").is_file()
                likelihood = json.loads((run / "likelihood.json").read_text())
                generation = json.loads((run / "generation.json").read_text())
                assert np.array(likelihood["scores"]).shape == (12, len(likelihood["labels"]))
                assert len(generation["reports"]) == len(generation["labels"]) == 12
                assert likelihood["study_ids"] == generation["study_ids"]
        # The extra rows: evaluations of the features+maps run of the first seed only.
        assert (out / "runs" / regime / "seed0-features+maps" / "likelihood.maps_removed.json").is_file()
        assert (out / "runs" / regime / "seed0-features+maps" / "generation.degraded_segmenter.json").is_file()
        assert not list((out / "runs" / regime / "seed1-features+maps").glob("*.maps_removed.json"))

    # Initial weights: drawn per seed, shared by a seed's arms and (but for the tower) by its two regimes.
    init = {
        (r, s): _weights(out / "init" / r / f"seed{s}" / "baseline") for r in ("pretrained", "random") for s in (0, 1)
    }
    lm = "model.language_model.layers.0.self_attn.q_proj.weight"
    tower = next(
        k for k in init["pretrained", 0] if k.startswith("model.vision_tower") and k.endswith("q_proj.weight")
    )
    assert not init["pretrained", 0][lm].equal(init["pretrained", 1][lm])
    assert init["pretrained", 0][lm].equal(init["random", 0][lm])
    assert not init["pretrained", 0][tower].equal(init["random", 0][tower])
    assert not init["random", 0][tower].equal(init["random", 1][tower])
    arm = _weights(out / "init" / "random" / "seed1" / "features+maps")
    assert all(arm[k].equal(v) for k, v in init["random", 1].items())

    # The look: both regimes, every comparison on both endpoints, the decision computed.
    record = json.loads((out / "looks" / "look-2.json").read_text())
    assert set(record["decisions"]) == {"pretrained", "random"}
    for decision in record["decisions"].values():
        assert decision["decision"] in ("success", "futility", "last look: inconclusive")
    rows = {(r["regime"], r["arm"], r["endpoint"]): r for r in summary["rows"]}
    for regime in ("pretrained", "random"):
        for endpoint in ("label_auroc", "ce_micro_f1"):
            main = rows[regime, "features+maps", endpoint]
            assert (main["seeds"], main["test_studies"]) == (2, 12)
            assert main["ci95"][0] <= main["delta"] <= main["ci95"][1] or main["ci95"][0] == main["ci95"][1]
            assert rows[regime, "features+maps (maps_removed)", endpoint]["seeds"] == 1
    assert json.loads((out / "summary.json").read_text())["rows"] == json.loads(json.dumps(summary["rows"]))

    # A rerun trains nothing and gives the same look; a missing endpoint file is computed again, without training.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation, "train_run", no_training)
    removed = out / "runs" / "random" / "seed1-baseline" / "likelihood.json"
    removed.unlink()
    again = run_ablation(out, settings)
    assert removed.is_file()
    with pytest.raises(ValueError, match="other settings"):  # the design cannot change under a folder's runs
        run_ablation(out, replace(settings, steps=5))
    assert [(r["regime"], r["arm"], r["delta"]) for r in again["rows"]] == [
        (r["regime"], r["arm"], r["delta"]) for r in summary["rows"]
    ]


def test_the_stopping_rule():
    settings = AblationSettings()
    row = {"p_hierarchical": 0.005, "ci95": [0.004, 0.03]}
    assert decide(row, 0, settings) == "success"
    assert decide({"p_hierarchical": 0.3, "ci95": [-0.02, 0.009]}, 0, settings) == "futility"
    assert decide({"p_hierarchical": 0.3, "ci95": [-0.02, 0.011]}, 1, settings) == "continue"
    assert decide({"p_hierarchical": 0.3, "ci95": [-0.02, 0.011]}, 2, settings) == "last look: inconclusive"
    assert decide(None, 0, settings) == "incomplete"
    assert settings.looks == (8, 16, 24) and settings.test == (2000, 2222)


def test_a_run_gets_the_default_models_recipe_and_the_seg_arms_the_cache(tmp_path, monkeypatch):
    from asarg.experiments.default_model import DefaultModelSettings

    calls = {}
    monkeypatch.setattr(
        ablation,
        "train_run",
        lambda path, init, data, size, seed, steps, extra: calls.update(
            {path.name: (size, seed, steps.steps, steps.batch_size, list(extra))}
        ),
    )
    monkeypatch.setattr(ablation, "check_seg_cache", lambda init: None)
    settings = AblationSettings()
    prepared = {"folders": {"train": tmp_path}}
    for arm in ("baseline", "maps"):
        ablation.train_one(tmp_path, tmp_path / arm, tmp_path / "init", 3, arm, prepared, settings)
    recipe = list(DefaultModelSettings().recipe)
    assert calls["baseline"] == (12800, 3, 800, 16, recipe)
    assert calls["maps"] == (12800, 3, 800, 16, [*recipe, "--seg_cache_dir", str(tmp_path / "seg_cache")])
    assert ablation.arms_at(7, settings) == tuple(settings.arms) and ablation.arms_at(8, settings) == (
        "baseline",
        "features+maps",
    )


def test_inference_variants_change_only_the_maps(make_asarg, synthcxr, tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    from asarg.evaluation.label_likelihood import sentence_log_likelihoods
    from asarg.processing.synthcxr.dataset import read_manifest

    model, processor = make_asarg(live_seg=True)
    images = [Image.open(synthcxr / r["image"]).convert("L") for r in read_manifest(synthcxr, "train")[:2]]
    sentences = ["No pneumothorax.", "Heart size is normal."]
    intact = sentence_log_likelihoods(model, processor, images, sentences)
    zeros = torch.zeros(2, model.config.num_seg_classes, 8, 8)
    with seg_variant(model, "maps_removed"):
        removed = sentence_log_likelihoods(model, processor, images, sentences)
    np.testing.assert_allclose(removed, sentence_log_likelihoods(model, processor, images, sentences, seg_maps=zeros))
    assert "run_segmenter" not in vars(model.model)  # the class's method again
    np.testing.assert_allclose(sentence_log_likelihoods(model, processor, images, sentences), intact)

    same = {k: v.clone() for k, v in model.model.segmenter.state_dict().items()}
    save_file(same, tmp_path / "segmenter.safetensors")
    with seg_variant(model, "degraded_segmenter", tmp_path):  # a "degraded" segmenter equal to the trained one
        np.testing.assert_allclose(sentence_log_likelihoods(model, processor, images, sentences), intact, rtol=1e-6)
    other = {k: v + 0.5 if v.is_floating_point() else v for k, v in same.items()}
    save_file(other, tmp_path / "segmenter.safetensors")
    with seg_variant(model, "degraded_segmenter", tmp_path):
        assert not np.allclose(sentence_log_likelihoods(model, processor, images, sentences), intact)
    assert model.model.segmenter.state_dict().keys() == same.keys()
    assert all(model.model.segmenter.state_dict()[k].equal(v) for k, v in same.items())  # never swapped for good


def test_asarg_reproduce_ablation_runs_the_quick_design_to_the_first_look(tmp_path, monkeypatch):
    from asarg.experiments import cli

    seen = {}

    def fake(out, settings, max_seeds, train, regimes):
        seen.update(settings=settings, max_seeds=max_seeds, train=train, regimes=regimes)
        return {"decisions": {}, "rows": []}

    monkeypatch.setattr(cli, "run_ablation", fake)
    assert cli.main(["--out", str(tmp_path / "a"), "--ablation", "--quick", "--max-seeds", "8"]) == 0
    assert seen == {"settings": QUICK_ABLATION, "max_seeds": 8, "train": True, "regimes": None}
    assert cli.main(["--out", str(tmp_path / "b"), "--ablation", "--table-only", "--regime", "random"]) == 0
    assert seen["settings"] == AblationSettings() and seen["train"] is False and seen["regimes"] == ["random"]
