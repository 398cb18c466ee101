"""Traceability on SynthCXR: does removing the map of a finding's anatomy hurt that finding's sentence most?

    .venv/bin/python benchmarks/grounding_synthcxr.py --checkpoint out/asarg-synthcxr --data data/synthcxr --n 200
    .venv/bin/python benchmarks/grounding_synthcxr.py --n 20          # smoke run: tiny UNTRAINED model

For each test study the report's sentences are traced with `asarg.evaluation.grounding.trace_report` (one ablated map, or
with --groups one CXAS anatomy group, at a time) and the rankings are scored with `score_grounding` against the
generator's finding locations: hit@1, hit@3, MRR, next to what a random ranking would score.

Meaningful numbers need a model trained on SynthCXR with segmentation maps (e.g. with the training recipe in
training/). Without --checkpoint a tiny randomly initialised model (random seg columns) is traced: that only checks
that the pipeline runs; its rankings are noise and its scores should sit near chance.

--text reference traces the ground-truth report (teacher-forced: grounding separated from generation quality);
--text generated traces what the model writes (greedy), matched to the study's true findings.
Segmentation: a checkpoint with a built-in segmenter segments the film itself; otherwise the study's ground-truth
masks are given, one per model channel by name (a CXAS anatomy-group name takes the union of its members; a name
SynthCXR does not draw gets an empty map).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_model(checkpoint: str | None, seed: int):
    """(model, processor): a checkpoint, or a tiny untrained model reading SynthCXR's mask channels."""
    if checkpoint:
        from modeling_asarg import AsargForConditionalGeneration, AsargProcessor

        model = AsargForConditionalGeneration.from_pretrained(checkpoint).eval()
        return model, AsargProcessor.from_pretrained(checkpoint)
    from asarg.processing.synthcxr.generator import ANATOMY_CLASSES
    from asarg.tiny import tiny_asarg_config, tiny_processor, tiny_tokenizer
    from modeling_asarg import AsargForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = tiny_asarg_config(
        tokenizer,
        use_seg_features=False,
        builtin_segmenter=False,
        num_seg_classes=len(ANATOMY_CLASSES),
        seg_class_names=list(ANATOMY_CLASSES),
    )
    torch.manual_seed(seed)
    model = AsargForConditionalGeneration(config).eval()
    with torch.no_grad():  # fresh seg columns are zero: randomise them so that ablation changes something
        model.model.multi_modal_projector.seg_linear.weight.normal_(0, 0.5)
    return model, tiny_processor(tokenizer, config)


def studies(data: str | None, n: int, seed: int, size: int):
    """(image, masks by name, report, findings) of n test studies: from a SynthCXR dir, or generated in memory."""
    if data:
        from asarg.processing.synthcxr.dataset import load_masks, read_manifest

        for record in read_manifest(data, "test")[:n]:
            names, masks = load_masks(record, data)
            image = Image.open(Path(data) / record["image"]).convert("L")
            yield image, dict(zip(names, masks)), record["findings_text"], record["findings"]
        return
    from asarg.processing.synthcxr.generator import generate_study

    index = 9  # index % 10 == 9: the test split
    for _ in range(n):
        study = generate_study(seed, index, size)
        index += 10
        yield (
            Image.fromarray(study.image),
            dict(zip(study.mask_names, study.masks)),
            study.report,
            [f.to_json() for f in study.findings],
        )


def model_masks(masks: dict, class_names: list[str]) -> np.ndarray:
    """K x H x W float masks in the model's channel order."""
    from modeling_asarg import CXAS_ANATOMY_GROUPS

    empty = np.zeros_like(next(iter(masks.values())), dtype=np.float32)
    out = []
    for name in class_names:
        members = [masks[m] for m in CXAS_ANATOMY_GROUPS.get(name, ()) if m in masks]
        out.append(masks[name] if name in masks else np.maximum.reduce(members) if members else empty)
    return np.stack(out).astype(np.float32)


def generate_report(model, processor, image, max_new_tokens: int, **seg) -> str:
    from asarg.processing.loaders.common import DEFAULT_PROMPT

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DEFAULT_PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt", **seg).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.post_process_image_text_to_text(out[:, inputs["input_ids"].shape[1] :])[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="ASaRG checkpoint dir (default: tiny untrained model, smoke run)")
    parser.add_argument("--data", help="SynthCXR dir (default: generate test studies in memory)")
    parser.add_argument("--n", type=int, default=20, help="number of test studies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="image size when generating in memory")
    parser.add_argument("--text", choices=("reference", "generated"), default="reference")
    parser.add_argument("--groups", action="store_true", help="ablate CXAS anatomy groups instead of single maps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--out", help="write scores, per-sentence cases and traces as JSON here")
    args = parser.parse_args()

    from asarg.evaluation.grounding import score_grounding, structure_groups, trace_report, trace_to_json

    model, processor = load_model(args.checkpoint, args.seed)
    builtin = model.model.segmenter is not None
    structures = structure_groups(model.config) if args.groups else None
    all_traces, all_findings, start = [], [], time.perf_counter()
    for image, masks, reference, findings in studies(args.data, args.n, args.seed, args.size):
        seg = {} if builtin else {"segmentation_maps": model_masks(masks, list(model.config.seg_class_names))}
        report = (
            reference
            if args.text == "reference"
            else generate_report(model, processor, image, args.max_new_tokens, **seg)
        )
        if not report.strip():
            continue
        traces = trace_report(
            model, processor, image, report, structures=structures, batch_size=args.batch_size, **seg
        )
        all_traces.append(traces)
        all_findings.append(findings)
    seconds = time.perf_counter() - start
    score = score_grounding(all_traces, all_findings)
    summary = {k: v for k, v in score.to_json().items() if k != "cases"}
    summary |= {
        "studies": len(all_traces),
        "seconds": round(seconds, 1),
        "model": args.checkpoint or "tiny-untrained",
        "text": args.text,
        "structures": "groups" if args.groups else "maps",
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        payload = summary | {"cases": score.cases, "traces": [trace_to_json(t, top=5) for t in all_traces]}
        Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
