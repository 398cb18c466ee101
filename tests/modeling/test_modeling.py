"""Model contract: LLaVA equivalence, from_llava, seg fusion, missing-input behaviour."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import prompt_for, xray_like
from transformers import LlavaForConditionalGeneration

from asarg.training.tiny import tiny_asarg_config, tiny_llava_config
from modeling_asarg import AsargConfig, AsargForConditionalGeneration


def _inputs(processor, n_images: int = 1, masks: bool = False):
    images = [xray_like(seed=i) for i in range(n_images)]
    kwargs = {}
    if masks:
        gen = torch.Generator().manual_seed(1)
        kwargs["segmentation_maps"] = [
            (torch.rand(processor.num_seg_classes, 40, 30, generator=gen) > 0.5).numpy() for _ in images
        ]
    return processor(images=images, text=[prompt_for(processor)] * n_images, return_tensors="pt", **kwargs)


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_seg_off_is_exactly_llava(tokenizer, make_asarg):
    asarg, processor = make_asarg(use_seg_features=False, use_seg_maps=False, builtin_segmenter=False)
    torch.manual_seed(3)
    llava = LlavaForConditionalGeneration(tiny_llava_config(tokenizer)).eval()
    assert _num_params(asarg) == _num_params(llava)
    asarg.load_state_dict(llava.state_dict(), strict=True)
    inputs = _inputs(processor)
    inputs.pop("seg_pixel_values", None)
    with torch.no_grad():
        diff = (asarg(**inputs).logits - llava(**inputs).logits).abs().max().item()
    assert diff <= 1e-5


def test_fresh_model_has_zero_seg_columns(make_asarg):
    model, _ = make_asarg()
    projector = model.model.multi_modal_projector
    assert projector.linear_1.in_features == model.config.vision_config.hidden_size  # LLaVA's shape
    assert projector.seg_linear.weight.shape == (model.config.text_config.hidden_size, model.config.seg_input_width)
    assert projector.seg_linear.bias is None
    assert projector.seg_linear.weight.abs().max() == 0
    assert projector.linear_1.weight.abs().max() > 0


def _grow(source, **overrides):
    """ASaRG grown from a LLaVA model or checkpoint: maps and features on (K=4, C=8), no built-in segmenter."""
    seg = dict(use_seg_maps=True, use_seg_features=True, num_seg_classes=4, seg_feature_channels=8)
    return AsargForConditionalGeneration.from_llava(source, **{**seg, "segmenter_config": None, **overrides})


@pytest.fixture
def saved_llava(tokenizer, tmp_path):
    torch.manual_seed(5)
    llava = LlavaForConditionalGeneration(tiny_llava_config(tokenizer)).eval()
    llava.save_pretrained(tmp_path / "llava")
    return llava, tmp_path / "llava"


def test_from_llava_reproduces_logits_then_learns_to_use_seg(make_asarg, saved_llava):
    llava, path = saved_llava
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert any(k.startswith("language_model.") for k in f.keys()), "expected LLaVA's legacy key layout on disk"

    model = _grow(path).eval()
    assert model.model.segmenter is None
    for name, param in llava.named_parameters():
        assert torch.equal(param, model.get_parameter(name)), f"{name} was not carried over"

    _, processor = make_asarg(builtin_segmenter=False)
    inputs = _inputs(processor, masks=True)
    features = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        before = model(**inputs, seg_features=features).logits
        reference = llava(**{k: v for k, v in inputs.items() if k != "seg_maps"}).logits
    assert (before - reference).abs().max().item() <= 1e-5

    # One gradient step and the seg inputs matter.
    model.train()
    labels = inputs["input_ids"].clone()
    loss = model(**inputs, seg_features=features, labels=labels).loss
    loss.backward()
    assert model.model.multi_modal_projector.seg_linear.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    model.eval()
    with torch.no_grad():
        with_seg = model(**inputs, seg_features=features).logits
        zeroed = model(**{**inputs, "seg_maps": torch.zeros_like(inputs["seg_maps"])}, seg_features=features).logits
    assert (with_seg - zeroed).abs().max().item() > 1e-4


def test_from_llava_accepts_an_in_memory_model_and_builds_a_segmenter(tokenizer):
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(tiny_llava_config(tokenizer)).eval()
    config = tiny_asarg_config(tokenizer)
    model = _grow(llava, use_seg_features=False, segmenter_config=config.segmenter_config)
    assert isinstance(model.config, AsargConfig) and model.config.use_seg_maps
    assert model.model.segmenter is not None
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_precomputed_maps_at_any_resolution_are_area_pooled(make_asarg):
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False, use_seg_features=False)
    inputs = _inputs(processor)
    full = (torch.rand(1, 4, 64, 64) > 0.5).float()  # 64 / 4 tokens = 16 px per token
    pooled = full.view(1, 4, 4, 16, 4, 16).mean(dim=(3, 5))
    with torch.no_grad():
        a = model(**inputs, seg_maps=full).logits
        b = model(**inputs, seg_maps=pooled).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_builtin_segmenter_is_frozen_and_stays_in_eval(make_asarg):
    model, _ = make_asarg()
    model.train()
    assert not model.model.segmenter.training
    assert not any(p.requires_grad for p in model.model.segmenter.parameters())
    assert model.model.multi_modal_projector.training


def test_missing_seg_inputs_raise_in_training(make_asarg):
    model, processor = make_asarg(builtin_segmenter=False)
    inputs = _inputs(processor)
    model.train()
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        model(**inputs)
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        model.model(**inputs)  # the base model: TRL's loss path calls it directly


def test_missing_seg_inputs_at_inference_warn_and_use_zeros(make_asarg, caplog):
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False)
    inputs = _inputs(processor)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        missing = model(**inputs).logits
    assert "none reached it" in caplog.text
    with torch.no_grad():
        zeros = model(**inputs, seg_maps=torch.zeros(1, 4, 4, 4), seg_features=torch.zeros(1, 8, 4, 4)).logits
    assert torch.equal(missing, zeros)

    model.config.missing_seg_inputs = "error"
    with pytest.raises(ValueError, match="none reached it"):
        model(**inputs)


def test_seg_pixel_values_without_segmenter_is_an_error(make_asarg):
    model, processor = make_asarg(builtin_segmenter=False)
    inputs = _inputs(processor)
    with pytest.raises(ValueError, match="no built-in segmenter"):
        model(**inputs, seg_pixel_values=torch.zeros(1, 3, 32, 32))


def test_wrong_seg_shapes_are_named(make_asarg):
    model, processor = make_asarg(builtin_segmenter=False)
    inputs = _inputs(processor)
    with pytest.raises(ValueError, match="seg_maps"):
        model(**inputs, seg_maps=torch.zeros(1, 5, 4, 4), seg_features=torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match="seg_features"):
        model(**inputs, seg_maps=torch.zeros(1, 4, 4, 4), seg_features=torch.zeros(2, 8, 4, 4))


def test_ablation_arms_share_one_code_path(tokenizer):
    widths = {}
    for feats in (False, True):
        for maps in (False, True):
            config = tiny_asarg_config(tokenizer, use_seg_features=feats, use_seg_maps=maps, builtin_segmenter=False)
            projector = AsargForConditionalGeneration(config).model.multi_modal_projector
            widths[(feats, maps)] = sum(m.in_features for m in (projector.linear_1, projector.seg_linear) if m)
    assert widths == {(False, False): 32, (True, False): 40, (False, True): 36, (True, True): 44}


def test_config_validation_messages(tokenizer):
    with pytest.raises(ValueError, match="one name per segmentation channel"):
        tiny_asarg_config(tokenizer, seg_class_names=["heart"])
    with pytest.raises(ValueError, match="feature_channels"):
        AsargConfig(segmenter_config={"num_classes": 159, "feature_channels": 3})
    assert AsargConfig().seg_class_names[134] == "lung"


@pytest.mark.parametrize(
    "strategy, layer",
    [("default", -2), ("full", -2), ("default", [-2, -1])],
    ids=["default", "full-cls", "two-layers"],
)
def test_vision_feature_choices_keep_seg_fusion_aligned(tokenizer, strategy, layer):
    from asarg.training.tiny import tiny_processor

    config = tiny_asarg_config(
        tokenizer, vision_feature_select_strategy=strategy, vision_feature_layer=layer, builtin_segmenter=False
    )
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(config).eval()
    processor = tiny_processor(tokenizer, config)
    inputs = _inputs(processor, masks=True)
    features = torch.randn(1, 8, 8, 8)
    out = model.model.get_image_features(inputs["pixel_values"], seg_maps=inputs["seg_maps"], seg_features=features)
    tokens = 16 + (strategy == "full")
    assert out.pooler_output[0].shape == (tokens, 32)
    with torch.no_grad():
        model(**inputs, seg_features=features)  # image tokens and features line up


def test_bfloat16_model_runs_with_float_seg_inputs(make_asarg):
    model, processor = make_asarg(live_seg=True)
    model = model.to(torch.bfloat16)
    inputs = _inputs(processor, masks=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_the_public_seams_compose_to_get_image_features(make_asarg, strategy):
    """get_vision_features + get_seg_tokens + project_image_tokens is exactly what get_image_features projects: the
    seams tracing uses to re-project one image with other seg columns."""
    from conftest import prompt_for, xray_like

    model, processor = make_asarg(live_seg=True, vision_feature_select_strategy=strategy)
    inputs = processor(images=[xray_like()], text=[prompt_for(processor)], return_tensors="pt")
    base = model.model
    with torch.no_grad():
        whole = base.get_image_features(inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"])
        vision = base.get_vision_features(inputs["pixel_values"])
        seg = base.get_seg_tokens(inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"])
        parts = base.project_image_tokens(vision, seg)
    assert torch.equal(whole.pooler_output[0], parts[0])
    assert vision.shape[1] == seg.shape[1] + (strategy == "full")


def test_a_frozen_segmenter_stays_frozen_after_loading(make_asarg, tmp_path):
    """Loading puts new parameters in place (which require gradients by default): `freeze_segmenter` must survive a
    save / load round trip, through the class and through the Auto class (the seg cache and trainable-parameter
    counts rely on it)."""
    from transformers import AutoModelForImageTextToText

    from modeling_asarg import AsargForConditionalGeneration, AsargModel

    model, _ = make_asarg(builtin_segmenter=True)
    assert not any(p.requires_grad for p in model.model.segmenter.parameters())
    model.save_pretrained(tmp_path)
    for loader in (AsargForConditionalGeneration, AutoModelForImageTextToText):
        loaded = loader.from_pretrained(tmp_path)
        assert not any(p.requires_grad for p in loaded.model.segmenter.parameters()), loader.__name__
        assert all(p.requires_grad for p in loaded.model.multi_modal_projector.parameters())
    model.model.save_pretrained(tmp_path / "base")  # the base model alone loads the same way
    base = AsargModel.from_pretrained(tmp_path / "base")
    assert not any(p.requires_grad for p in base.segmenter.parameters())
