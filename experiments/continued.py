"""The paper's likely regime beside training from scratch: ASaRG grown out of a trained LLaVA and trained on.

    asarg reproduce --out runs/reproduce --continued [--seeds ...] [--train-sizes ...]

For every (size, seed) whose baseline run has finished, two runs of `continued_steps` more steps, from the same
trained baseline, on the same data in the same order, with the same optimiser settings:
- `continued-baseline`: the baseline, trained on without segmentation (the fair control: it gets the same extra
  compute);
- `continued-features+maps`: the baseline grown with the seg inputs switched on; its new projector columns start at
  zero, so before training it writes exactly the baseline's reports (checked: logits equal), and anything it gains
  comes from the segmentation.
`feasibility-seg-help.md` saw masks fed from the start act as a shortcut that slowed learning of fine detail; here
the model has learnt to read the film first. Results: `continued.json` / `continued.md`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from asarg.processing.checkpoints import write_checksums
from asarg.processing.inference import prompt_text
from asarg.processing.synthcxr.dataset import read_manifest

from .reproduce_table import write_tables
from .steps import ReproduceSettings, evaluate_run, make_data, train_run

CONTINUED = {"continued-baseline": (False, False), "continued-features+maps": (True, True)}


@torch.no_grad()
def _check_same_logits(baseline, grown, processor, image) -> None:
    """The grown model must start as the baseline: equal logits on one film (the seg columns are zero)."""
    inputs = processor(images=[image], text=[prompt_text(processor, "Findings?")], return_tensors="pt")
    gap = (baseline(**inputs).logits - grown(**inputs).logits).abs().max().item()
    if gap > 1e-5:
        raise RuntimeError(f"the grown model does not start as the baseline (max logit gap {gap:.2e})")


def grow(baseline_run: Path, target: Path, image, use_seg_features: bool, use_seg_maps: bool) -> Path:
    """`target`: the trained baseline with the given seg inputs switched on (new columns zero), saved with its
    processor. Written to a staging folder first, so a killed run never leaves a half-written starting point."""
    from transformers import AutoProcessor

    from modeling_asarg import AsargForConditionalGeneration

    if (target / "model.safetensors").is_file():
        return target
    baseline = AsargForConditionalGeneration.from_pretrained(baseline_run).eval()
    grown = AsargForConditionalGeneration.from_pretrained(
        baseline_run, use_seg_features=use_seg_features, use_seg_maps=use_seg_maps
    ).eval()
    processor = AutoProcessor.from_pretrained(baseline_run)
    _check_same_logits(baseline, grown, processor, image)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    grown.save_pretrained(staging)
    processor.save_pretrained(staging)
    write_checksums(staging)
    staging.rename(target)
    return target


def run_continued(out: Path, folders: dict, settings, steps: int, learning_rate: float) -> dict:
    """Both continued runs for every (size, seed) with a finished baseline; returns {(size, seed, name): result}."""
    from PIL import Image

    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    image = Image.open(folders["rg"] / test[0]["image"]).convert("L")
    results = {}
    for size in settings.train_sizes:
        for seed in settings.seeds:
            baseline_run = out / "runs" / f"n{size}-seed{seed}-baseline"
            if not (baseline_run / "result.json").is_file():
                continue
            for name, arm in CONTINUED.items():
                run_dir = out / "runs" / f"n{size}-seed{seed}-{name}"
                if not (run_dir / "result.json").is_file():
                    start = grow(baseline_run, out / "init" / f"n{size}-seed{seed}-{name}", image, *arm)
                    extra = ["--learning_rate", str(learning_rate)]
                    train_run(run_dir, start, folders["rg"], size, seed, _with_steps(settings, steps), extra)
                    evaluate_run(run_dir, test, folders["rg"])
                results[(size, seed, name)] = json.loads((run_dir / "result.json").read_text())
    return results


def _with_steps(settings, steps: int):
    return replace(settings, steps=steps)


__all__ = ["CONTINUED", "grow", "run_continued"]


def continued(out, settings: ReproduceSettings) -> dict:
    """The grown-from-the-trained-baseline regime for every finished baseline run; `continued.{json,md,png}`."""
    out = Path(out)
    folders = make_data(out, settings)
    steps, lr = settings.continued_steps, settings.continued_learning_rate
    results = run_continued(out, folders, settings, steps, lr)
    done = replace(settings, train_sizes=tuple(sorted({size for size, _, _ in results}, reverse=True)))
    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    references = [rec["findings_text"] for rec in test]
    arms = tuple(CONTINUED)
    return write_tables(out, results, {}, references, replace(done, arms=arms), name="continued", control=arms[0])
