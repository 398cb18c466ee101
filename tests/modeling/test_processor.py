"""Processor contract: image kinds, masks, seg pixels, chat template, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import prompt_for, xray_like
from PIL import Image

from modeling_asarg import AsargProcessor


@pytest.fixture
def processor(make_asarg):
    return make_asarg()[1]


def _run(processor, image, **kwargs):
    return processor(images=image, text=prompt_for(processor), return_tensors="pt", **kwargs)


def test_outputs_every_model_input(processor):
    out = _run(processor, xray_like())
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "seg_pixel_values"}
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    assert out["seg_pixel_values"].shape == (1, 3, 32, 32)
    n_image_tokens = (out["input_ids"] == processor.image_token_id).sum().item()
    assert n_image_tokens == (32 // 8) ** 2  # CLS dropped ("default" strategy)


def test_seg_pixel_values_use_imagenet_normalisation(processor):
    white = Image.new("L", (32, 32), 255)
    seg = _run(processor, white)["seg_pixel_values"][0]
    expected = (1.0 - torch.tensor(processor.seg_image_mean)) / torch.tensor(processor.seg_image_std)
    assert torch.allclose(seg[:, 16, 16], expected, atol=1e-5)


def test_accepts_8_and_16_bit_grayscale_rgb_and_rgba(processor):
    base = np.asarray(xray_like(32, 32))
    base = base.copy()
    base[0, 0], base[0, 1] = 0, 255  # full range, so 16-bit min-max scaling is exact
    reference = _run(processor, Image.fromarray(base))["pixel_values"]
    as_16bit = base.astype(np.uint16) * 257
    variants = {
        "uint16 array": as_16bit,
        "I;16 PIL": Image.fromarray(as_16bit),
        "RGB": Image.fromarray(base).convert("RGB"),
        "RGBA": Image.fromarray(base).convert("RGBA"),
        "HxWx1 array": base[..., None],
        "float [0,1] array": base.astype(np.float32) / 255.0,
    }
    for name, image in variants.items():
        got = _run(processor, image)["pixel_values"]
        assert torch.allclose(got, reference, atol=1e-5), name


def test_twelve_bit_data_in_16_bit_container_is_not_black(processor):
    twelve_bit = np.asarray(xray_like(32, 32)).astype(np.uint16) * 16  # max 4080 of 65535
    seg = _run(processor, twelve_bit)["seg_pixel_values"]
    assert seg.std() > 0.5


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not an image", "expected a PIL.Image.Image, a numpy array or a torch tensor"),
        ({"pixels": 1}, "expected a PIL.Image.Image"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (Image.new("L", (0, 0)), "empty"),
        (np.zeros((2, 3, 4, 5), np.uint8), "expected H x W"),
        (np.full((8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_raise_value_error(processor, bad, message):
    with pytest.raises(ValueError, match=message):
        _run(processor, bad)


def test_masks_are_padded_with_the_image_and_area_pooled(processor):
    masks = np.ones((4, 40, 20), bool)  # tall image: padded left and right to 40 x 40
    out = _run(processor, xray_like(40, 20), segmentation_maps=masks)
    seg = out["seg_maps"][0]
    assert seg.shape == (4, 4, 4)
    # columns 0 and 3 of the 4x4 grid cover [0,10) and [30,40): pure padding -> 0; the middle is the image -> 1
    assert torch.all(seg[:, :, 0] == 0) and torch.all(seg[:, :, 3] == 0)
    assert torch.all(seg[:, :, 1:3] == 1)


def test_pooled_masks_give_the_same_tokens_as_full_resolution_in_the_model(make_asarg):
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False, use_seg_features=False)
    masks = np.random.default_rng(0).random((4, 32, 32)) > 0.5
    out = _run(processor, xray_like(32, 32), segmentation_maps=masks)
    with torch.no_grad():
        pooled = model(**out).logits
        full = model(**{**out, "seg_maps": torch.as_tensor(masks[None], dtype=torch.float32)}).logits
    assert torch.allclose(pooled, full, atol=1e-5)


@pytest.mark.parametrize(
    "masks, message",
    [
        ([np.zeros((4, 40, 30)), np.zeros((4, 40, 30))], "2 mask stacks for 1 images"),
        (np.zeros((3, 40, 30)), "3 classes but this processor expects num_seg_classes=4"),
        (np.zeros((4, 20, 30)), "masks must be at the image's resolution"),
        (np.zeros((40, 30)), "expected K x H x W"),
        (np.full((4, 40, 30), 255), "outside \\[0, 1\\]"),
    ],
)
def test_bad_masks_raise_value_error(processor, masks, message):
    with pytest.raises(ValueError, match=message):
        _run(processor, xray_like(40, 30), segmentation_maps=masks)


def test_truncation_that_cuts_image_tokens_is_an_error(processor):
    with pytest.raises(ValueError, match="truncation"):
        processor(images=xray_like(), text=prompt_for(processor), truncation=True, max_length=8)


def test_image_and_prompt_count_mismatch_is_an_error(processor):
    with pytest.raises(ValueError, match="number of images"):
        processor(images=[xray_like(), xray_like()], text=prompt_for(processor))


def test_chat_template_and_post_processing(processor):
    text = prompt_for(processor, report="Normal heart size.")
    assert text.startswith("USER: <image>\nFindings?") and text.endswith("ASSISTANT: Normal heart size.</s>\n")
    ids = processor.tokenizer("Normal heart size.", return_tensors="pt")["input_ids"]
    assert processor.post_process_image_text_to_text(ids) == ["Normal heart size."]


def test_save_and_load_keep_the_seg_settings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AsargProcessor.from_pretrained(tmp_path)
    assert (loaded.seg_image_size, loaded.num_seg_classes, loaded.pad_to_square) == (32, 4, True)
    assert loaded.chat_template == processor.chat_template
    a = _run(processor, xray_like())
    b = _run(loaded, xray_like())
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_from_llava_processor_takes_the_seg_settings_from_the_config(make_asarg, tokenizer):
    from asarg.training.tiny import tiny_asarg_config

    _, base = make_asarg()
    with_segmenter = tiny_asarg_config(tokenizer)
    built = AsargProcessor.from_llava_processor(base, with_segmenter)
    assert (built.seg_image_size, built.num_seg_classes) == (32, 4)
    assert built.chat_template == base.chat_template and built.tokenizer is base.tokenizer
    without = AsargProcessor.from_llava_processor(base, tiny_asarg_config(tokenizer, builtin_segmenter=False))
    out = without(images=xray_like(), text=prompt_for(without), return_tensors="pt")
    assert without.seg_image_size is None and "seg_pixel_values" not in out


def test_the_generation_prompt_ends_where_the_reports_first_word_begins():
    """The report's first token in training carries the space after "ASSISTANT:"; the generation prompt must end at the
    colon, so that generation starts from the same token boundary (a trailing space would be a lone token there)."""
    from asarg.processing.inference import prompt_text
    from asarg.processing.loaders.common import messages
    from asarg.training.tiny import tiny_asarg

    _, processor = tiny_asarg()
    prompt = prompt_text(processor)
    full = processor.apply_chat_template(messages("Normal heart size."))
    assert prompt.endswith("ASSISTANT:") and full.startswith(prompt)
    tokenizer = processor.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer(full, add_special_tokens=False)["input_ids"][: len(prompt_ids)] == prompt_ids
