"""`asarg reproduce --default-model` at toy sizes (the session's `quick_model`): stage 1 keeps the tower frozen,
stage 2 trains it, and the decoding chosen on validation studies is the one the saved model generates with."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file


def tower_weights(folder) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(folder / "model.safetensors").items() if "vision_tower" in k}


def test_stage_one_keeps_the_tower_frozen_and_stage_two_trains_it(quick_model):
    out = quick_model.parent.parent
    init, stage1, final = (tower_weights(p) for p in (out / "init" / "default", out / "default" / "run", quick_model))
    assert init.keys() == stage1.keys() == final.keys() and init
    assert all(torch.equal(init[k], stage1[k]) for k in init)
    assert any(not torch.equal(stage1[k], final[k]) for k in init)


def test_the_chosen_decoding_is_the_best_on_validation_and_is_saved(quick_model):
    """Repetition penalty x guidance scale, chosen by the mean of CE micro- and macro-F1 on validation studies, and
    written where every `generate` reads it."""
    from transformers import GenerationConfig

    from asarg.experiments.default_model import QUICK_DEFAULT

    decoding = json.loads((quick_model / "scores.json").read_text())["decoding"]
    sweep = decoding["sweep"]
    grid = {(s["repetition_penalty"], s["guidance_scale"]) for s in sweep}
    assert grid == {(p, g) for p in QUICK_DEFAULT.repetition_penalties for g in QUICK_DEFAULT.guidance_scales}
    best = max((s["f1_micro"] + s["f1_macro"]) / 2 for s in sweep)
    chosen = decoding["chosen"]
    score = [
        (s["f1_micro"] + s["f1_macro"]) / 2
        for s in sweep
        if (s["repetition_penalty"], s["guidance_scale"]) == (chosen["repetition_penalty"], chosen["guidance_scale"])
    ]
    assert score == [best]
    assert decoding["validation_studies"] == QUICK_DEFAULT.validation_studies
    generation = GenerationConfig.from_pretrained(quick_model)
    assert generation.repetition_penalty == chosen["repetition_penalty"]
    assert (generation.guidance_scale or 1.0) == chosen["guidance_scale"]
