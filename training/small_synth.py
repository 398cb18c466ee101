"""The "small-synth" model size: LLaVA's layout small enough to learn SynthCXR on a CPU, defined in one place.

A CLIP-style ViT (128 px, patch 16: 64 image tokens), a Llama-style LM and a byte-level BPE trained on the training
reports; the segmenter is the specialist trained by `asarg train-segmenter`. Every ablation arm is built by
`small_synth_config` from the same `SmallSynthSpec`, so arms differ only in `use_seg_features` / `use_seg_maps`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import CLIPVisionConfig

from asarg.processing.checkpoints import write_checksums
from asarg.training.tiny import asarg_processor, clip_config, llama_config, llava_config, tiny_tokenizer
from modeling_asarg import AsargConfig, AsargForConditionalGeneration, AsargProcessor, AsargSegmenterConfig


@dataclass(frozen=True)
class SmallSynthSpec:
    image_size: int = 128
    patch_size: int = 16
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vocab_size: int = 1000
    max_positions: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


SMALL_SYNTH = SmallSynthSpec()


def report_tokenizer(reports: list[str], spec: SmallSynthSpec = SMALL_SYNTH):
    """Byte-level BPE trained on the training reports (and the chat template's words), `<image>` one token."""
    corpus = [*reports, "USER: ASSISTANT: Describe the findings of this chest radiograph."]
    return tiny_tokenizer(corpus, vocab_size=spec.vocab_size)


def vision_config(spec: SmallSynthSpec = SMALL_SYNTH) -> CLIPVisionConfig:
    return clip_config(spec.image_size, spec.patch_size, spec.vision_hidden, spec.vision_layers, spec.vision_heads, 4)


def small_synth_config(
    tokenizer,
    segmenter_settings: AsargSegmenterConfig | dict | None,
    use_seg_features: bool,
    use_seg_maps: bool,
    spec: SmallSynthSpec = SMALL_SYNTH,
    **overrides,
) -> AsargConfig:
    """One arm. `segmenter_settings`: the trained specialist's config (or its `segmenter_config.json` as a dict; None:
    seg inputs come precomputed, e.g. ground-truth masks)."""
    if isinstance(segmenter_settings, dict):
        segmenter_settings = AsargSegmenterConfig(**segmenter_settings)
    text = llama_config(
        tokenizer, spec.text_hidden, spec.text_layers, spec.text_heads, 4, spec.max_positions, tie=True
    )
    llava = llava_config(
        tokenizer,
        vision_config(spec),
        text,
        vision_feature_layer=-1,  # the layer the vision pretraining head reads (a 4-layer tower has no spare layer)
        tie_word_embeddings=True,
    )
    seg = {"segmenter_config": segmenter_settings, "use_seg_features": use_seg_features, "use_seg_maps": use_seg_maps}
    if segmenter_settings is not None:
        seg["seg_feature_channels"] = segmenter_settings.feature_channels
    return AsargConfig.from_llava_config(llava, **seg, **overrides)


def small_synth_processor(tokenizer, config: AsargConfig, spec: SmallSynthSpec = SMALL_SYNTH) -> AsargProcessor:
    return asarg_processor(tokenizer, config, spec.image_size)


ARMS = {
    "baseline": (False, False),
    "features": (True, False),
    "maps": (False, True),
    "features+maps": (True, True),
}


def build_arm_checkpoints(
    out,
    reports: list[str],
    vision_tower_dir,
    segmenter_dir,
    arms=tuple(ARMS),
    seed: int = 0,
    spec: SmallSynthSpec = SMALL_SYNTH,
) -> dict[str, Path]:
    """Write one initial checkpoint per arm under `out/<arm>`: the same tokenizer, the same pretrained vision tower and
    frozen specialist, and the same random language model and projector (the baseline's weights are copied into
    every arm; only the zero-initialised `seg_linear` is new), so arms differ in their seg inputs alone."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionModel

    tokenizer = report_tokenizer(reports, spec)
    settings = json.loads((Path(segmenter_dir) / "segmenter_config.json").read_text())
    torch.manual_seed(seed)
    baseline = AsargForConditionalGeneration(small_synth_config(tokenizer, settings, False, False, spec))
    baseline.model.vision_tower.load_state_dict(CLIPVisionModel.from_pretrained(vision_tower_dir).state_dict())
    baseline.model.segmenter.load_state_dict(load_file(Path(segmenter_dir) / "segmenter.safetensors"), strict=True)
    written = {}
    for name in arms:
        config = small_synth_config(tokenizer, settings, *ARMS[name], spec)
        model = AsargForConditionalGeneration(config)
        result = model.load_state_dict(baseline.state_dict(), strict=False)
        if result.unexpected_keys or any("seg_linear" not in key for key in result.missing_keys):
            raise RuntimeError(f"arm {name}: weights do not carry over from the baseline: {result}")
        written[name] = Path(out) / name
        model.save_pretrained(written[name])
        small_synth_processor(tokenizer, config, spec).save_pretrained(written[name])
        write_checksums(written[name])
    return written


__all__ = [
    "ARMS",
    "build_arm_checkpoints",
    "SMALL_SYNTH",
    "SmallSynthSpec",
    "report_tokenizer",
    "small_synth_config",
    "small_synth_processor",
]
