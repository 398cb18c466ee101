"""Parameters ASaRG adds to LLaVA, per arm, counted on the meta device (no memory, no weights: the 7B shape too).

The projector's seg columns (`seg_linear`, (C or K or C+K) x text hidden) are the only parameters an arm adds to the
model it is grown from; the built-in segmenter, when the model carries one, is counted on its own line (it is frozen
and can be left out entirely when seg inputs come precomputed or from the seg cache).
"""

from __future__ import annotations

import torch
from perf_shapes import ARMS, SHAPES, llava_config, seg_overrides
from transformers import LlavaForConditionalGeneration

from modeling_asarg import AsargConfig, AsargForConditionalGeneration, build_segmenter


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() yields a tied weight once


def parameters(name: str) -> dict:
    config = llava_config(name)
    with torch.device("meta"):
        llava = count(LlavaForConditionalGeneration(config))
        arms = {}
        for arm in ARMS:
            asarg = AsargForConditionalGeneration(
                AsargConfig.from_llava_config(config, **seg_overrides(SHAPES[name], arm))
            )
            added = count(asarg) - llava
            arms[arm] = {"added": added, "added_percent": 100 * added / llava}
        settings = seg_overrides(SHAPES[name], segmenter=True)["segmenter_config"]
        segmenter = count(build_segmenter(settings))
    return {
        "shape": name,
        "llava_params": llava,
        "arms": arms,
        "segmenter": {"architecture": settings.architecture, "params": segmenter},
    }
