"""Data and the small-synth recipe's model for the training, memory and tracing benchmarks, built in memory.

SynthCXR studies come straight from the generator (image, anatomy masks, report; about 25 ms each at 128 px), so no
dataset folder is written. The model is the reproduction's small-synth arm with random weights: a BPE trained on the
studies' reports, the SMALL_SYNTH vision tower and language model, and the built-in U-Net at the specialist's size
(`asarg train-segmenter`: 59 classes, 32 feature channels, widths 16-128, 128 px), frozen as in the recipe.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

PROMPT = "Write the findings section of the radiology report for this chest X-ray."
SPECIALIST = {"num_classes": 59, "feature_channels": 32, "widths": (16, 32, 64, 128), "image_size": 128}


@lru_cache(maxsize=4)
def studies(n: int, size: int = 128, seed: int = 7):
    from asarg.processing.synthcxr.generator import generate_study

    return tuple(generate_study(seed, index, size) for index in range(n))


def rows(n: int, size: int = 128) -> list[dict]:
    """TRL conversational rows (`images`, `messages`), as the synthcxr loader gives them."""
    return [
        {
            "images": [Image.fromarray(study.image)],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
                {"role": "assistant", "content": [{"type": "text", "text": study.report}]},
            ],
        }
        for study in studies(n, size)
    ]


def small_synth_model(arm: str = "features+maps", segmenter: bool = True, reports: int = 64, seed: int = 0):
    """(model in train mode with the vision tower and segmenter frozen, processor) of one small-synth arm."""
    from asarg.training.small_synth import ARMS, report_tokenizer, small_synth_config, small_synth_processor
    from modeling_asarg import AsargForConditionalGeneration, default_segmenter_config

    tokenizer = report_tokenizer([study.report for study in studies(reports)])
    settings = default_segmenter_config(**SPECIALIST) if segmenter else None
    config = small_synth_config(tokenizer, settings, *ARMS[arm])
    if settings is None:  # precomputed seg inputs at the specialist's sizes
        config = type(config).from_llava_config(config, num_seg_classes=59, seg_feature_channels=32)
    torch.manual_seed(seed)
    model = AsargForConditionalGeneration(config)
    model.model.vision_tower.requires_grad_(False)  # the recipe's freeze_vision_tower
    return model.train(), small_synth_processor(tokenizer, config)


def masks_for(study, classes: int) -> np.ndarray:
    """float32 (classes, H, W) ground-truth masks: SynthCXR's anatomy, padded or cut to the model's class count."""
    masks = study.masks.astype(np.float32)[:classes]
    if masks.shape[0] < classes:
        masks = np.concatenate([masks, np.zeros((classes - masks.shape[0], *masks.shape[1:]), np.float32)])
    return masks
