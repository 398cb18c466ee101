"""Bad input at the model's and the processor's public boundary: a clear ValueError, or the correct result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import prompt_for, xray_like

from modeling_asarg.processing_asarg import to_rgb_image


@pytest.fixture
def precomputed(make_asarg):
    """A tiny model that reads precomputed seg maps and features, its processor and one prompt's inputs."""
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False)
    inputs = processor(images=xray_like(32, 32), text=prompt_for(processor), return_tensors="pt")
    return model, processor, inputs


def _seg(maps=None, features=None) -> dict:
    maps = torch.rand(1, 4, 8, 8) if maps is None else maps
    return {"seg_maps": maps, "seg_features": torch.randn(1, 8, 4, 4) if features is None else features}


def _forward(model, inputs, **seg):
    with torch.no_grad():
        return model(**inputs, **seg).logits


# ---- seg values given to the model directly ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seg, message",
    [
        (_seg(maps=torch.full((1, 4, 8, 8), 255.0)), r"`seg_maps` have values in \[255, 255\], outside \[0, 1\].*255"),
        (_seg(maps=torch.full((1, 4, 8, 8), 255, dtype=torch.uint8)), r"outside \[0, 1\].*Divide 0-255 masks by 255"),
        (_seg(maps=torch.full((1, 4, 8, 8), -0.5)), r"outside \[0, 1\]"),
        (_seg(maps=torch.full((1, 4, 8, 8), float("nan"))), "`seg_maps` contain NaN or infinite values"),
        (_seg(features=torch.full((1, 8, 4, 4), float("inf"))), "`seg_features` contain NaN or infinite values"),
        (_seg(features=torch.full((1, 8, 4, 4), float("nan"))), "`seg_features` contain NaN or infinite values"),
    ],
    ids=["0-255-float", "0-255-uint8", "negative", "nan-maps", "inf-features", "nan-features"],
)
def test_bad_seg_values_raise_naming_the_input(precomputed, seg, message):
    """0-255 masks used to be accepted and NaN gave NaN logits."""
    model, _, inputs = precomputed
    with pytest.raises(ValueError, match=message):
        _forward(model, inputs, **seg)


def test_nan_seg_maps_through_generate_raise_instead_of_emitting_token_zero(precomputed):
    model, _, inputs = precomputed
    with pytest.raises(ValueError, match="`seg_maps` contain NaN"):
        model.generate(**inputs, **_seg(maps=torch.full((1, 4, 8, 8), float("nan"))), max_new_tokens=2)


def test_nan_seg_pixel_values_are_named(make_asarg):
    model, processor = make_asarg(live_seg=True)
    inputs = processor(images=xray_like(32, 32), text=prompt_for(processor), return_tensors="pt")
    inputs["seg_pixel_values"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="built-in segmenter's .*`seg_pixel_values`"):
        _forward(model, inputs)


def test_the_value_check_runs_once_per_generate_call(precomputed, monkeypatch):
    """The check syncs the device: it belongs to the prefill (image encoding), not to every decode step."""
    model, _, inputs = precomputed
    calls = []
    check = type(model.model)._check_seg_values
    monkeypatch.setattr(type(model.model), "_check_seg_values", lambda *a: calls.append(1) or check(*a))
    model.generate(**inputs, **_seg(), max_new_tokens=4, min_new_tokens=4)
    assert calls == [1]


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8, torch.float16])
def test_bool_and_integer_0_1_maps_are_accepted_as_coverage(precomputed, dtype):
    model, _, inputs = precomputed
    masks = torch.rand(1, 4, 8, 8) > 0.5
    expected = _forward(model, inputs, **_seg(maps=masks.float(), features=torch.zeros(1, 8, 4, 4)))
    got = _forward(model, inputs, **_seg(maps=masks.to(dtype), features=torch.zeros(1, 8, 4, 4)))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "seg, message",
    [
        (_seg(maps=np.zeros((1, 4, 8, 8), np.float32)), "`seg_maps` must be a torch.Tensor, got ndarray"),
        (_seg(maps=torch.zeros(1, 4, 8, 8, dtype=torch.complex64)), "`seg_maps` has dtype torch.complex64"),
        (_seg(maps=torch.zeros(1, 4, 0, 8)), "`seg_maps` has an empty height or width"),
        (_seg(features=torch.zeros(1, 8, 4, 0)), "`seg_features` has an empty height or width"),
    ],
    ids=["numpy", "complex", "empty-maps", "empty-features"],
)
def test_seg_inputs_of_the_wrong_kind_raise(precomputed, seg, message):
    """numpy: AttributeError 'dim'; complex: the imaginary part silently dropped; empty: adaptive_avg_pool2d error."""
    model, _, inputs = precomputed
    with pytest.raises(ValueError, match=message):
        _forward(model, inputs, **seg)


def test_seg_pixel_values_of_another_batch_are_named(make_asarg):
    model, processor = make_asarg(live_seg=True)
    inputs = processor(images=xray_like(32, 32), text=prompt_for(processor), return_tensors="pt")
    inputs["seg_pixel_values"] = torch.cat([inputs["seg_pixel_values"]] * 2)
    with pytest.raises(ValueError, match=r"`seg_pixel_values` must have shape \(batch=1"):
        _forward(model, inputs)


# ---- image tokens vs images ------------------------------------------------------------------------------------------


def test_pixel_values_without_image_tokens_count_tokens_not_elements(precomputed):
    """LLaVA said "tokens: 0, features: 512": 512 elements, not the 16 image tokens."""
    model, processor, inputs = precomputed
    text = processor(text="USER: Findings? ASSISTANT:", return_tensors="pt")
    with pytest.raises(ValueError, match=r"0 image tokens .* 1 image\(s\) x 16 tokens per image = 16 .*processor"):
        model.generate(**text, pixel_values=inputs["pixel_values"], **_seg(), max_new_tokens=2)
    doubled = torch.cat([inputs["input_ids"], inputs["input_ids"]], dim=1)
    with pytest.raises(ValueError, match=r"32 image tokens .* = 16 image features"):
        model(input_ids=doubled, pixel_values=inputs["pixel_values"], **_seg())


# ---- processor ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "masks, message",
    [
        (np.full((4, 32, 32), np.nan), "segmentation_maps\\[0\\] contains NaN or infinite values"),
        (np.where(np.eye(32, dtype=bool), np.inf, 0.5)[None].repeat(4, 0), "contains NaN or infinite"),
        (np.full((4, 32, 32), 255), r"outside \[0, 1\].*Divide 0-255 masks by 255"),
        (np.zeros((4, 32, 32), np.complex64), "has dtype complex64"),
    ],
    ids=["nan", "inf", "0-255", "complex"],
)
def test_processor_masks_with_bad_values_raise(precomputed, masks, message):
    """NaN used to pass the [0, 1] check (every comparison with NaN is false)."""
    _, processor, _ = precomputed
    with pytest.raises(ValueError, match=message):
        processor(images=xray_like(32, 32), text=prompt_for(processor), segmentation_maps=masks)


def test_processor_masks_with_different_class_counts_in_one_batch_raise(precomputed):
    """Without num_seg_classes: numpy's "all input arrays must have the same shape"."""
    _, processor, _ = precomputed
    processor.num_seg_classes = None
    masks = [np.zeros((4, 32, 32)), np.zeros((3, 32, 32))]
    with pytest.raises(ValueError, match=r"\[4, 3\] classes per image"):
        processor(images=[xray_like(32, 32)] * 2, text=[prompt_for(processor)] * 2, segmentation_maps=masks)


def test_channel_first_arrays_and_tensors_are_the_same_image():
    """A (3, H, W) array gave PIL's "Cannot handle this data type: (1, 1, 64), |u1"; a tensor was refused."""
    hwc = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    expected = np.asarray(to_rgb_image(hwc))
    assert np.array_equal(np.asarray(to_rgb_image(hwc.transpose(2, 0, 1))), expected)
    assert np.array_equal(np.asarray(to_rgb_image(torch.from_numpy(hwc).permute(2, 0, 1))), expected)
    gray = hwc[..., 0]
    assert np.array_equal(np.asarray(to_rgb_image(gray[None])), np.asarray(to_rgb_image(gray)))
    floats = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255  # torchvision's ToTensor layout and range
    assert np.abs(np.asarray(to_rgb_image(floats)).astype(int) - expected).max() <= 1


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8), np.complex64), "dtype complex64; expected integer, float or bool"),
        (np.array([[None] * 8] * 8), "dtype object"),  # said "The image contains NaN or infinite values"
    ],
)
def test_images_of_non_real_dtype_raise(image, message):
    with pytest.raises(ValueError, match=message):
        to_rgb_image(image)


def test_an_image_token_mismatch_starts_with_llavas_message(make_asarg):
    """Code written against LLaVA's error text still matches it; ASaRG's explanation follows."""
    from conftest import prompt_for, xray_like
    from transformers import LlavaForConditionalGeneration

    model, processor = make_asarg()
    inputs = processor(images=[xray_like()], text=[prompt_for(processor)], return_tensors="pt")
    ids = inputs["input_ids"].clone()
    ids[ids == model.config.image_token_id] = processor.tokenizer.pad_token_id  # the images lose their tokens
    with pytest.raises(ValueError) as asarg_error:
        model(input_ids=ids, pixel_values=inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"])
    llava = LlavaForConditionalGeneration(model.config)  # LLaVA's own class, same config and tokens
    with pytest.raises(ValueError) as llava_error:
        llava(input_ids=ids, pixel_values=inputs["pixel_values"])
    assert str(asarg_error.value).startswith(str(llava_error.value))
    assert "processor" in str(asarg_error.value)
