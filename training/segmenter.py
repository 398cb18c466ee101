"""`asarg train-segmenter`: train the built-in U-Net, the specialist, on SynthCXR anatomy masks.

The paper's specialist (CXAS) is trained elsewhere, on other images, and used frozen. This is its SynthCXR stand-in:
train it on an `asarg synth` folder made with its own seed (disjoint from the report-generation studies), report
per-class Dice on that folder's held-out split, and save a segmenter that the ablation arms then load frozen.

    asarg synth --n 1500 --size 128 --seed 101 --out data/synthcxr-seg
    asarg train-segmenter --data data/synthcxr-seg --out runs/segmenter --size 128 --epochs 8

Inputs are prepared exactly as `AsargProcessor` prepares `seg_pixel_values` (square padding, bilinear resize,
ImageNet normalisation), so the trained weights see at inference what they saw in training. Targets are the masks
area-resized to the same side (coverage fractions). Loss: BCE + soft Dice. After every epoch the state (weights,
optimiser, schedule, random generators) is written atomically to `OUT/last.pt`; a rerun resumes from it, so a kill
costs at most one epoch. Output: `segmenter.safetensors` + `segmenter_config.json` (the format of
`modeling_asarg.convert_cxas_weights.save_segmenter`) and `dice.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from asarg.processing.atomic import atomic_write
from asarg.processing.outputs import claim_run_dir
from asarg.processing.synthcxr.dataset import load_masks, read_manifest
from modeling_asarg import build_segmenter
from modeling_asarg.configuration_asarg import IMAGENET_MEAN, IMAGENET_STD, AsargSegmenterConfig
from modeling_asarg.convert_cxas_weights import load_converted_segmenter, save_segmenter
from modeling_asarg.processing_asarg import pad_to_square, seg_pixel_array, to_rgb_image

STATE_FILE = "last.pt"
DICE_FILE = "dice.json"


def segmenter_inputs(image, size: int) -> np.ndarray:
    """(3, size, size) float32: what `AsargProcessor` gives the built-in segmenter for this image."""
    return seg_pixel_array(pad_to_square(to_rgb_image(image)), size)


def load_split(root, split: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(inputs (N,3,S,S), targets (N,K,S,S) coverage fractions, class names) of one SynthCXR split."""
    records = read_manifest(root, split)[:limit]
    if not records:
        raise ValueError(f"{root}: the {split!r} split is empty; generate more studies with `asarg synth`.")
    inputs, targets, names = [], [], None
    for rec in records:
        with Image.open(Path(root) / rec["image"]) as image:
            inputs.append(segmenter_inputs(image, size))
        rec_names, masks = load_masks(rec, root)
        if names is not None and rec_names != names:
            raise ValueError(f"{rec['mask']}: its mask classes differ from the other studies' ({root}).")
        names = rec_names
        targets.append(_square_targets(masks, size))
    return torch.from_numpy(np.stack(inputs)), torch.stack(targets), names


def _square_targets(masks: np.ndarray, size: int) -> torch.Tensor:
    """Pad the (K,H,W) masks to a square as the image is padded (centred), then area-resize to (K,size,size)."""
    k, h, w = masks.shape
    side = max(h, w)
    padded = np.zeros((k, side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    padded[:, top : top + h, left : left + w] = masks
    return F.interpolate(torch.from_numpy(padded)[None], size=(size, size), mode="area")[0]


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (mean over classes): Dice keeps small structures (ribs, clavicles) from vanishing."""
    probs = logits.sigmoid()
    overlap = (probs * targets).sum((0, 2, 3))
    dice = (2 * overlap + 1) / (probs.sum((0, 2, 3)) + targets.sum((0, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, targets) + (1 - dice).mean()


@torch.no_grad()
def dice_per_class(segmenter, inputs, targets, batch_size: int = 32) -> np.ndarray:
    """Dice of the thresholded prediction (logit > 0, as the model's "threshold" maps) vs targets > 0.5, per class,
    pooled over the studies (classes absent from every study and every prediction score 1)."""
    segmenter.eval()
    overlap = predicted = true = 0
    for start in range(0, len(inputs), batch_size):
        pred = segmenter(inputs[start : start + batch_size])["logits"] > 0
        gold = targets[start : start + batch_size] > 0.5
        overlap = overlap + (pred & gold).sum((0, 2, 3)).double()
        predicted = predicted + pred.sum((0, 2, 3)).double()
        true = true + gold.sum((0, 2, 3)).double()
    denominator = predicted + true
    return torch.where(denominator > 0, 2 * overlap / denominator.clamp(min=1), 1.0).numpy()


def segmenter_settings(names, size: int, widths, feature_channels: int) -> AsargSegmenterConfig:
    """The `segmenter_config` of the trained U-Net."""
    settings = {
        "architecture": "unet",
        "in_channels": 3,
        "num_classes": len(names),
        "class_names": list(names),
        "widths": list(widths),
        "feature_channels": feature_channels,
        "image_size": size,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }
    return AsargSegmenterConfig(**settings)


def _save_state(path: Path, state: dict) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".last.", suffix=".tmp", delete=False) as f:
        torch.save(state, f)
    os.replace(f.name, path)


def _restore(out: Path, segmenter, optimizer, scheduler) -> int:
    """Epochs already done (0 for a fresh run); the state of the last complete epoch is loaded."""
    path = out / STATE_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=True)  # a pickle in OUT must not run code
    segmenter.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    print(f"resuming {out} after epoch {state['epoch']}")
    return state["epoch"]


def train_segmenter(
    data,
    out,
    size=128,
    epochs=8,
    batch_size=16,
    lr=3e-3,
    widths=(16, 32, 64, 128),
    feature_channels=32,
    seed=0,
    max_studies=None,
    overwrite=False,
) -> dict:
    """Train, evaluate on the held-out split and save; returns the Dice summary (also written to `dice.json`)."""
    identity = {
        "data": str(Path(data).resolve()),
        "size": size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "widths": list(widths),
        "feature_channels": feature_channels,
        "seed": seed,
        "max_studies": max_studies,
    }
    out = claim_run_dir(out, [data], command="train-segmenter", identity=identity, overwrite=overwrite)
    torch.manual_seed(seed)
    inputs, targets, names = load_split(data, "train", size, max_studies)
    settings = segmenter_settings(names, size, widths, feature_channels)
    segmenter = build_segmenter(settings)
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(_restore(out, segmenter, optimizer, scheduler), epochs):
        loss = _train_epoch(segmenter, optimizer, scheduler, inputs, targets, batch_size)
        _save_state(out / STATE_FILE, _state(segmenter, optimizer, scheduler, epoch + 1))
        print(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  {time.perf_counter() - start:.0f}s", flush=True)
    save_segmenter(out, settings, segmenter.state_dict())
    summary = evaluate_segmenter(out, data, max_studies)
    summary["training"] = {"studies": len(inputs), "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    atomic_write(out / DICE_FILE, json.dumps(summary, indent=2).encode())
    return summary


def _state(segmenter, optimizer, scheduler, epoch: int) -> dict:
    return {
        "model": segmenter.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
    }


def _train_epoch(segmenter, optimizer, scheduler, inputs, targets, batch_size: int) -> float:
    segmenter.train()
    order, total = torch.randperm(len(inputs)), 0.0
    for start in range(0, len(inputs), batch_size):
        rows = order[start : start + batch_size]
        loss = segmentation_loss(segmenter(inputs[rows])["logits"], targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(rows)
    return total / len(inputs)


def evaluate_segmenter(out, data, max_studies=None, split: str = "test") -> dict:
    """Per-class Dice of the saved segmenter on a held-out split of `data`."""
    segmenter = load_converted_segmenter(out)
    size = segmenter.config.image_size
    inputs, targets, names = load_split(data, split, size, max_studies)
    dice = dice_per_class(segmenter, inputs, targets)
    return {
        "split": split,
        "studies": len(inputs),
        "mean_dice": float(dice.mean()),
        "dice": {name: round(float(d), 4) for name, d in zip(names, dice)},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asarg train-segmenter", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an `asarg synth` folder with its own seed (train + test splits)")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes from OUT/last.pt)")
    p.add_argument("--size", type=int, default=128, help="segmenter input side (default %(default)s)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--widths", default="16,32,64,128", help="U-Net encoder widths, comma-separated")
    p.add_argument("--feature-channels", type=int, default=32, help="channels of the features the projector reads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-studies", type=int, default=None, help="use at most this many studies per split")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds another run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))
    settings = (args.size, args.epochs, args.batch_size, args.lr, widths, args.feature_channels, args.seed)
    try:
        summary = train_segmenter(args.data, args.out, *settings, args.max_studies, args.overwrite)
    except ValueError as error:  # an --out it must not write, a data folder it cannot read
        print(f"asarg train-segmenter: {error}", file=sys.stderr)
        return 2
    worst = sorted(summary["dice"].items(), key=lambda kv: kv[1])[:5]
    print(f"mean Dice {summary['mean_dice']:.3f} on {summary['studies']} {summary['split']} studies; lowest: {worst}")
    return 0


__all__ = ["dice_per_class", "evaluate_segmenter", "segmenter_inputs", "train_segmenter"]
