"""benchmarks/quality/tracing.py's engine: through the public seams, an unchanged input gives the model's own teacher-forced
log-likelihood; occluding a patch changes it; the side word is removed as the side test needs."""

from __future__ import annotations

import torch
from conftest import load_benchmark, xray_like


def test_the_tracer_reproduces_the_models_likelihood_and_patches_matter(make_asarg):
    tracing = load_benchmark("tracing")
    model, processor = make_asarg(live_seg=True)
    tracer = tracing.Tracer(model, processor)
    ctx = tracer.encode(xray_like(height=64, width=64), "The heart is normal.")
    ll = tracer.logliks(ctx, ctx["seg"], ctx["vision"])[0]
    inputs = ctx["inputs"]
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    start = ctx["start"]
    ids = inputs["input_ids"][0]
    expected = logits[0, start - 1 : -1].log_softmax(-1).gather(-1, ids[start:, None]).sum()
    assert torch.allclose(ll, expected, atol=1e-4)
    drops = tracer.patch_drops(ctx)
    assert drops.shape == (ctx["seg"].shape[1],) and abs(drops).max() > 0


def test_the_side_word_is_removed():
    tracing = load_benchmark("tracing")
    assert tracing.SIDE_WORD.sub("", "Small right pleural effusion.") == "Small pleural effusion."
    assert tracing.SIDE_WORD.sub("", "Left-sided pneumothorax.") == "pneumothorax."
