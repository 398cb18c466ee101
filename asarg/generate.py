"""`asarg generate`: chest X-ray images in, reports out.

    asarg generate cxr.png study.dcm --model DIR_OR_HUB_ID [--json] [--out FILE]

`generate_reports` is the batched function behind it (also used by the reproduction pipeline). Images are read with
`asarg.processing.image_io.load_image` (PNG/JPEG 8/16-bit, DICOM); a file that cannot be read is reported by name and
the others still run (the exit status is 1 then). `--json` writes JSON Lines: `{"image": path, "report": text}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from asarg.processing.loaders.common import DEFAULT_PROMPT


def _prompt_text(processor, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


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
    text = _prompt_text(processor, prompt)
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


def load_for_generation(model_id: str):
    """(model in eval mode, processor); checksums and unreadable weight files are checked first, with clear errors."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from asarg.processing.checkpoints import open_checkpoint

    model, processor = open_checkpoint(model_id, AutoModelForImageTextToText, AutoProcessor, trust_remote_code=True)
    return model.eval(), processor


def _read_images(paths: list[str]) -> tuple[list, list[str], list[str]]:
    """(images, their paths, error lines) — a bad file costs only itself."""
    from asarg.processing.image_io import load_image

    images, good, errors = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            good.append(path)
        except (OSError, ValueError) as error:
            errors.append(f"asarg generate: {path}: {error}")
    return images, good, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg generate", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="PNG / JPEG / DICOM files")
    p.add_argument("--model", required=True, help="an ASaRG checkpoint folder or Hub id (trust_remote_code)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--json", action="store_true", help="write JSON Lines {image, report} instead of text")
    p.add_argument("--out", help="write here instead of standard output")
    args = p.parse_args(argv)
    images, paths, errors = _read_images(args.images)
    for line in errors:
        print(line, file=sys.stderr)
    model, processor = load_for_generation(args.model)
    reports = generate_reports(model, processor, images, args.prompt, args.batch_size, args.max_new_tokens)
    if args.json:
        lines = [json.dumps({"image": path, "report": report}) for path, report in zip(paths, reports)]
    else:
        lines = [f"{path}\t{report}" for path, report in zip(paths, reports)]
    output = "\n".join(lines) + ("\n" if lines else "")
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)
    return 1 if errors else 0


__all__ = ["generate_reports", "load_for_generation"]
