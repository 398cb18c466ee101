"""The model shapes of the performance suite, built from configs alone (random weights, nothing downloaded).

    tiny          asarg.training.tiny: the tests' model (32 px CLIP, 2-layer Llama, 4 maps, 8 feature channels)
    small-synth   asarg.training.small_synth.SMALL_SYNTH: the reproduction's model (59 maps, 32 channels)
    smol          SmolLM2-135M's text config + a ViT-B/14 at 336 px (576 image tokens), CXAS seg (159 maps, 128 ch)
    llava-1.5-7b  LLaVA-1.5-7B's config (Llama-2-7B + CLIP ViT-L/14 at 336), CXAS seg; meta device on CPU

Every comparison is LLaVA against ASaRG grown from that very model (`AsargForConditionalGeneration.from_llava`,
which shares its weights), so the two differ by the seg columns and the seg inputs alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from modeling_asarg import AsargConfig, AsargForConditionalGeneration, cxas_seg_config, default_segmenter_config

CONFIGS = Path(__file__).resolve().parent / "configs"
ARMS = {"features": (True, False), "maps": (False, True), "features+maps": (True, True)}
PROMPT_TOKENS = 32  # text tokens after the image tokens: a short instruction, as in report generation


@dataclass(frozen=True)
class Shape:
    name: str
    num_seg_classes: int
    seg_feature_channels: int
    maps_size: int = 128  # precomputed seg_maps (K, 128, 128) and seg_features (C, 64, 64): the protocol
    features_size: int = 64
    segmenter: str = "unet"  # the built-in segmenter of the "segmenter in the loop" runs: "unet" or "cxas"


SHAPES = {
    "tiny": Shape("tiny", 4, 8),
    "small-synth": Shape("small-synth", 59, 32),
    "smol": Shape("smol", 159, 128, segmenter="cxas"),
    "llava-1.5-7b": Shape("llava-1.5-7b", 159, 128, segmenter="cxas"),
}


def llava_config(name: str) -> LlavaConfig:
    if name in ("smol", "llava-1.5-7b"):
        return _published(name)
    return {"tiny": _tiny, "small-synth": _small_synth}[name]()


def _tiny() -> LlavaConfig:
    from asarg.training.tiny import tiny_llava_config, tiny_tokenizer

    return tiny_llava_config(tiny_tokenizer())


def _small_synth() -> LlavaConfig:
    from asarg.training.small_synth import SMALL_SYNTH, small_synth_config
    from asarg.training.tiny import tiny_tokenizer

    spec = SMALL_SYNTH
    config = small_synth_config(tiny_tokenizer(), None, False, False, spec)
    config.text_config.vocab_size = spec.vocab_size  # the recipe's BPE is trained to this size on the reports
    return _as_llava(config)


def _as_llava(config: AsargConfig) -> LlavaConfig:
    """The LLaVA config of an ASaRG config (its LLaVA fields only)."""
    from modeling_asarg import llava_config_kwargs
    from modeling_asarg.modeling_asarg import ASARG_CONFIG_FIELDS

    kwargs = {k: v for k, v in llava_config_kwargs(config).items() if k not in ASARG_CONFIG_FIELDS}
    return LlavaConfig(**kwargs)


def _published(name: str) -> LlavaConfig:
    """A published model's config, kept as data in `configs/NAME.json` (its `_source` says where it is from)."""
    settings = json.loads((CONFIGS / f"{name}.json").read_text())
    settings.pop("_source")
    return LlavaConfig(**settings)


def seg_overrides(shape: Shape, arm: str = "features+maps", segmenter: bool = False) -> dict:
    """`from_llava` / `AsargConfig` keyword arguments of one arm, with or without a built-in segmenter."""
    use_features, use_maps = ARMS[arm]
    if shape.segmenter == "cxas":
        seg = cxas_seg_config(builtin_segmenter=segmenter)
    else:
        settings = _unet_settings(shape) if segmenter else None
        seg = {
            "num_seg_classes": shape.num_seg_classes,
            "seg_feature_channels": shape.seg_feature_channels,
            "segmenter_config": settings,
        }
    return {**seg, "use_seg_features": use_features, "use_seg_maps": use_maps}


def _unet_settings(shape: Shape) -> dict:
    if shape.name == "tiny":  # asarg.training.tiny's built-in segmenter
        return default_segmenter_config(shape.num_seg_classes, shape.seg_feature_channels, (8, 16), 32)
    # The small-synth specialist that `asarg train-segmenter` trains (runs/reproduce/segmenter/segmenter_config.json).
    return default_segmenter_config(shape.num_seg_classes, shape.seg_feature_channels, (16, 32, 64, 128), 128)


def build_pair(name: str, arm: str = "features+maps", segmenter: bool = False, device="cpu", dtype=torch.float32):
    """(LLaVA, ASaRG grown from it with `from_llava`), random weights, in eval mode; the two share every LLaVA weight."""
    config = llava_config(name)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` directly: a 7B model is never materialised in float32
    try:
        with torch.device(device):
            llava = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    asarg = AsargForConditionalGeneration.from_llava(llava, **seg_overrides(SHAPES[name], arm, segmenter))
    return llava, asarg.to(device).eval()


def make_inputs(name: str, config, batch: int, device="cpu", dtype=torch.float32, seed=0, grid=False) -> dict:
    """One prompt per row: BOS, the image tokens, PROMPT_TOKENS text tokens; images, precomputed seg inputs at the
    issue's resolutions (maps 128x128, features 64x64) or, with `grid`, already on the patch grid as the seg cache
    stores them; and `seg_pixel_values` for a built-in segmenter."""
    shape, vision = SHAPES[name], config.vision_config
    generator = torch.Generator().manual_seed(seed)
    side = vision.image_size // vision.patch_size
    image_tokens = side**2 + (config.vision_feature_select_strategy == "full")
    text = torch.randint(5, min(config.text_config.vocab_size, 30000), (batch, PROMPT_TOKENS), generator=generator)
    text[text == config.image_token_id] = 5
    input_ids = torch.cat(
        [torch.full((batch, 1), 1), torch.full((batch, image_tokens), config.image_token_id), text], 1
    )
    seg_side = 512 if shape.segmenter == "cxas" else (32 if name == "tiny" else 128)
    maps_side, features_side = (side, side) if grid else (shape.maps_size, shape.features_size)
    size = vision.image_size
    tensors = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator).to(dtype),
        "seg_maps": torch.rand(batch, shape.num_seg_classes, maps_side, maps_side, generator=generator),
        "seg_features": torch.randn(
            batch, shape.seg_feature_channels, features_side, features_side, generator=generator
        ).to(dtype),
        "seg_pixel_values": torch.randn(batch, 3, seg_side, seg_side, generator=generator).to(dtype),
    }
    return {key: value.to(device) for key, value in tensors.items()}
