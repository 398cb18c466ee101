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


def test_the_verdict_method_scores_the_observations_logit_under_occlusion(make_asarg):
    """`verdict`: a structure's drop is how much occluding its region lowers the classifier's logit for the sentence's
    observation; per patch likewise; a sentence that asserts nothing has no verdict to trace."""
    tracing = load_benchmark("tracing")
    model, processor = make_asarg(live_seg=True, finding_loss_weight=1.0, finding_tokens=True)
    with torch.no_grad():
        model.model.finding_tokens.weight.normal_(0, 1.0)
    tracer = tracing.Tracer(model, processor)
    ctx = tracer.encode(xray_like(height=64, width=64), "There is a small pleural effusion.")
    effusion = tracing.CHEXPERT_LABELS.index("Pleural Effusion")
    with torch.inference_mode():
        full = model.model.finding_logits(model.model.project_image_tokens(ctx["vision"], ctx["seg"]))[0, effusion]
    drops = tracer.patch_drops(ctx, "verdict")
    assert drops.shape == (ctx["seg"].shape[1],) and abs(drops).max() > 0
    seg, vision = ctx["seg"].clone(), ctx["vision"].clone()
    offset = vision.shape[1] - seg.shape[1]
    seg[0, 5], vision[0, offset + 5] = 0, ctx["vision"][0].mean(0)
    with torch.inference_mode():
        occluded = model.model.finding_logits(model.model.project_image_tokens(vision, seg))[0, effusion]
    assert abs(drops[5] - float(full - occluded)) < 1e-4
    normal = tracer.encode(xray_like(height=64, width=64), "The heart is normal.")
    assert tracer.patch_drops(normal, "verdict") is None
    assert set(tracer.structure_drops(normal, ["right lung", "left lung"], "verdict").values()) == {0.0}


def test_the_sides_method_reads_the_sided_verdicts_not_the_side_word(make_asarg):
    """`sides`: with sided finding tokens, the traced side is the lung whose verdict for the sentence's observation is
    higher, the same with or without the side word; `attention` (trace_report's method) reads that side's query."""
    tracing = load_benchmark("tracing")
    model, processor = make_asarg(
        live_seg=True,
        finding_loss_weight=1.0,
        finding_tokens=True,
        finding_sides=["Pneumothorax", "Pleural Effusion"],
        num_finding_labels=18,
    )
    right, left = 14 + 2, 14 + 3  # Pleural Effusion (right), (left)
    with torch.no_grad():
        model.model.finding_tokens.bias[left] = 5.0
        model.model.finding_tokens.queries.normal_(0, 3.0)
    tracer = tracing.Tracer(model, processor)
    image = xray_like(height=64, width=64)
    for sentence in ("Small right pleural effusion.", "Small pleural effusion."):
        drops = tracer.structure_drops(tracer.encode(image, sentence), ["right lung", "left lung"], "sides")
        assert tracing.traced_side(drops) == "left"
    with torch.no_grad():
        model.model.finding_tokens.bias[right] = 20.0
    ctx = tracer.encode(image, "Small pleural effusion.")
    assert tracing.traced_side(tracer.structure_drops(ctx, ["right lung", "left lung"], "sides")) == "right"
    with torch.inference_mode():
        tokens = model.model.project_image_tokens(ctx["vision"], ctx["seg"])[:, :-18]
        looks = model.model.finding_tokens.attention(tokens)[0, right, -ctx["seg"].shape[1] :]
    assert torch.allclose(torch.as_tensor(tracer.attention(ctx)), looks)  # trace_report's: the side the verdicts say
    assert tracer.side_scores(tracer.encode(image, "Mild cardiomegaly.")) is None
