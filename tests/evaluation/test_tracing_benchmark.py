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


def test_with_finding_tokens_the_tracer_still_reproduces_the_likelihood_and_reads_the_attention(make_asarg):
    """Finding tokens follow the patch tokens: the counterfactual path (`project_image_tokens`) still gives the model's
    own likelihood, and the `attention` method reads where the sentence's finding query looks, over the patches."""
    tracing = load_benchmark("tracing")
    model, processor = make_asarg(live_seg=True, finding_loss_weight=1.0, finding_tokens=True)
    with torch.no_grad():
        model.model.finding_tokens.queries.normal_(0, 3.0)  # a peaked attention, as after training
    tracer = tracing.Tracer(model, processor)
    ctx = tracer.encode(xray_like(height=64, width=64), "There is a small pleural effusion.")
    with torch.no_grad():
        logits = model(**ctx["inputs"]).logits.float()
    ids, start = ctx["inputs"]["input_ids"][0], ctx["start"]
    expected = logits[0, start - 1 : -1].log_softmax(-1).gather(-1, ids[start:, None]).sum()
    assert torch.allclose(tracer.logliks(ctx, ctx["seg"], ctx["vision"])[0], expected, atol=1e-4)
    weights = tracer.attention(ctx)
    assert weights.shape == (ctx["seg"].shape[1],) and abs(weights.sum() - 1) < 1e-4
    effusion = tracing.CHEXPERT_LABELS.index("Pleural Effusion")
    with torch.inference_mode():
        tokens = model.model.project_image_tokens(ctx["vision"], ctx["seg"])[:, :-14]
        looks = model.model.finding_tokens.attention(tokens)[0, effusion, -ctx["seg"].shape[1] :]
    assert torch.allclose(torch.as_tensor(weights), looks)
    assert tracer.attention(tracer.encode(xray_like(height=64, width=64), "The heart is normal.")) is None
