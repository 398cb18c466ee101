"""Reports from a loaded model: the chat turn a report is asked with, batched greedy generation, and the loader every
tool uses to open a model for generation (`asarg generate`, grounding, the Space, the reproduction, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checkpoints import open_checkpoint
from .loaders.common import DEFAULT_PROMPT, messages


def prompt_text(processor, prompt: str = DEFAULT_PROMPT) -> str:
    """The user turn (one image + `prompt`) in the processor's chat template, ready for the assistant's report."""
    return processor.apply_chat_template(messages("", prompt)[:1], add_generation_prompt=True)


@torch.inference_mode()
def generate_reports(
    model,
    processor,
    images: Sequence,
    prompt: str = DEFAULT_PROMPT,
    batch_size: int = 8,
    max_new_tokens: int = 160,
    **generate_kwargs,
) -> list[str]:
    """One report per image (PIL or numpy), greedy unless `generate_kwargs` say otherwise; batches are left-padded."""
    text = prompt_text(processor, prompt)
    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    reports: list[str] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            inputs = processor(images=chunk, text=[text] * len(chunk), padding=True, return_tensors="pt")
            inputs = inputs.to(model.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            reports += [r.strip() for r in processor.post_process_image_text_to_text(new_tokens)]
    finally:
        tokenizer.padding_side = padding_side
    return reports


def load_for_generation(model_id: str, trust_remote_code: bool = False):
    """(model in eval mode, processor); checksums and unreadable weight files are checked first, with clear errors.
    A folder's own model code runs only with `trust_remote_code=True` (`open_checkpoint`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = open_checkpoint(
        model_id, AutoModelForImageTextToText, AutoProcessor, trust_remote_code=trust_remote_code
    )
    return model.eval(), processor


__all__ = ["generate_reports", "load_for_generation", "prompt_text"]
