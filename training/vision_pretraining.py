"""Pretrain the small-synth vision tower: classify the 14 CheXpert labels of SynthCXR studies disjoint from the
report-generation data, as chest X-ray encoders are pretrained on image-level labels (e.g. CheXpert). Every arm then
starts from this tower and keeps it frozen (LLaVA's regime), so the comparison is between models that can see.

    asarg synth --n 4000 --size 128 --seed 201 --out data/synthcxr-vision
    python -m asarg.training.vision_pretraining --data data/synthcxr-vision --out runs/vision-tower

The head reads the mean of the patch tokens of the last layer, the layer the small-synth projector reads
(`vision_feature_layer=-1`, CLS dropped). Targets: positive 1, uncertain 0.5, negative and blank 0. Images are
prepared by the small-synth image processor after square padding, as `AsargProcessor` prepares them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import CLIPVisionModel

from asarg.evaluation.report_labeler import CHEXPERT_LABELS
from asarg.processing.atomic import atomic_write
from asarg.processing.synthcxr.dataset import read_manifest
from modeling_asarg.processing_asarg import pad_to_square, to_rgb_image

from .small_synth import SMALL_SYNTH, SmallSynthSpec, vision_config
from .tiny import clip_image_processor

TOWER_DIR = "vision_tower"
METRICS_FILE = "vision_metrics.json"


class PatchMeanClassifier(nn.Module):
    """A CLIP vision tower and a linear head on the mean of its last layer's patch tokens."""

    def __init__(self, config, num_labels: int = len(CHEXPERT_LABELS)):
        super().__init__()
        self.tower = CLIPVisionModel(config)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.head = nn.Linear(config.hidden_size, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.tower(pixel_values).last_hidden_state[:, 1:]
        return self.head(self.norm(patches.mean(1)))


def label_targets(labels: dict) -> np.ndarray:
    value = {1: 1.0, -1: 0.5}
    return np.array([value.get(labels.get(name), 0.0) for name in CHEXPERT_LABELS], np.float32)


def load_split(root, split: str, spec: SmallSynthSpec, limit: int | None = None):
    """(pixel_values (N,3,S,S), targets (N,14)) of one SynthCXR split."""
    records = read_manifest(root, split)[:limit]
    processor = clip_image_processor(spec.image_size)
    images = []
    for rec in records:
        with Image.open(Path(root) / rec["image"]) as image:
            images.append(pad_to_square(to_rgb_image(image)))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, torch.from_numpy(np.stack([label_targets(rec["labels"]) for rec in records]))


def f1_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """Micro and macro F1 of `logit > 0` against positives (target 1), and per label."""
    pred, gold = logits > 0, targets == 1
    tp, fp, fn = ((pred & gold).sum(0), (pred & ~gold).sum(0), (~pred & gold).sum(0))
    per_label = (2 * tp / (2 * tp + fp + fn).clamp(min=1)).tolist()
    micro = float(2 * tp.sum() / max(int((2 * tp + fp + fn).sum()), 1))
    return {
        "f1_micro": micro,
        "f1_macro": float(np.mean(per_label)),
        "f1": {name: round(f, 4) for name, f in zip(CHEXPERT_LABELS, per_label)},
    }


def pretrain_vision_tower(
    data, out, spec=SMALL_SYNTH, epochs=10, batch_size=32, lr=1e-3, seed=0, max_studies=None
) -> dict:
    """Train the classifier, save the tower (`OUT/vision_tower`) and its test F1 (`OUT/vision_metrics.json`)."""
    torch.manual_seed(seed)
    pixels, targets = load_split(data, "train", spec, max_studies)
    model = PatchMeanClassifier(vision_config(spec))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    total = epochs * math.ceil(len(pixels) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total, pct_start=0.1)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        model.train()
        order, running = torch.randperm(len(pixels)), 0.0
        for start in range(0, len(pixels), batch_size):
            rows = order[start : start + batch_size]
            loss = loss_fn(model(pixels[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(rows)
        print(f"epoch {epoch + 1}/{epochs}  loss {running / len(pixels):.4f}", flush=True)
    metrics = evaluate(model, data, spec, max_studies)
    metrics["training"] = {"studies": len(pixels), "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    model.tower.save_pretrained(Path(out) / TOWER_DIR)
    atomic_write(Path(out) / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    return metrics


@torch.no_grad()
def evaluate(model, data, spec, max_studies=None, split: str = "test") -> dict:
    model.eval()
    pixels, targets = load_split(data, split, spec, max_studies)
    logits = torch.cat([model(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
    scores = f1_scores(logits, targets)
    constant = f1_scores(torch.where(targets.mean(0, keepdim=True) >= 0.5, 1.0, -1.0).expand_as(targets), targets)
    return {"split": split, "studies": len(pixels), **scores, "majority_f1_micro": constant["f1_micro"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vision_pretraining", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-studies", type=int, default=None)
    args = p.parse_args(argv)
    metrics = pretrain_vision_tower(
        args.data, args.out, SMALL_SYNTH, args.epochs, args.batch_size, args.lr, args.seed, args.max_studies
    )
    print(json.dumps({k: v for k, v in metrics.items() if k != "f1"}), json.dumps(metrics["f1"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
