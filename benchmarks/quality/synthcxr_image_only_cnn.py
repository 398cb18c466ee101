"""Does an image-only CNN saturate SynthCXR? Train a small CNN on the films alone, and the same CNN with anatomy
masks as extra input channels (ground-truth masks: an upper bound, see README "Mask semantics"), at two
training-set sizes with the same number of optimiser steps, and report per-label F1 / AUROC on the test split.

    .venv/bin/python benchmarks/quality/synthcxr_image_only_cnn.py --cache /tmp/synthcxr_cnn --sizes 1000 8000

Labels: positive = 1; uncertain (-1), negated (0) and blank = 0 (the R2Gen convention). Thresholds per label are
chosen on the validation split (max F1), then applied to the test split. One thread, CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asarg.processing.synthcxr.dataset import split_of
from asarg.processing.synthcxr.findings import CHEXPERT
from asarg.processing.synthcxr.generator import VERSION, generate_study

GROUPS = {
    "right lung": ["right lung"],
    "left lung": ["left lung"],
    "heart": ["heart"],
    "mediastinum": ["upper mediastinum", "aortic arch"],
    "trachea": ["trachea"],
    "spine": ["spine"],
    "clavicles": ["clavicle right", "clavicle left"],
    "diaphragm": ["right hemidiaphragm", "left hemidiaphragm"],
    "ribs": " rib ",
}


def _group_masks(names, masks: np.ndarray) -> np.ndarray:
    out = []
    for pick in GROUPS.values():
        sel = [i for i, n in enumerate(names) if (pick in n if isinstance(pick, str) else n in pick)]
        out.append(masks[sel].any(axis=0))
    return np.stack(out)


def build_cache(path: Path, n: int, seed: int, size: int) -> dict:
    if path.is_file():
        z = np.load(path)
        if int(z["n"]) >= n and str(z["version"]) == VERSION:
            return {k: z[k] for k in z.files}
    imgs = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, len(GROUPS), size, size), bool)
    labels = np.zeros((n, len(CHEXPERT)), np.int8)
    t0 = time.perf_counter()
    for i in range(n):
        st = generate_study(seed, i, size)
        imgs[i], masks[i] = st.image, _group_masks(st.mask_names, st.masks)
        labels[i] = [st.labels[o] == 1 for o in CHEXPERT]
        if (i + 1) % 1000 == 0:
            print(f"generated {i + 1}/{n} ({(i + 1) / (time.perf_counter() - t0):.1f}/s)", flush=True)
    split = np.array([split_of(i) for i in range(n)])
    np.savez(path, images=imgs, masks=masks, labels=labels, split=split, n=n, version=VERSION)
    return {"images": imgs, "masks": masks, "labels": labels, "split": split}


def make_cnn(in_ch: int, n_out: int) -> nn.Module:
    """7 conv-BN-ReLU layers in 4 stride-2 stages (16-24-48-96), global average pooling, linear head."""

    def block(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    layers = (
        block(in_ch, 16, 2)
        + block(16, 24, 2)
        + block(24, 24, 1)
        + block(24, 48, 2)
        + block(48, 48, 1)
        + block(48, 96, 2)
        + block(96, 96, 1)
    )
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, n_out))


def _inputs(data: dict, idx: np.ndarray, with_masks: bool) -> torch.Tensor:
    x = torch.from_numpy(data["images"][idx]).float().div_(255).unsqueeze(1)
    x = (x - 0.5) / 0.25
    if with_masks:
        x = torch.cat([x, torch.from_numpy(data["masks"][idx]).float()], 1)
    return x


def train(data: dict, train_idx: np.ndarray, with_masks: bool, steps: int, batch: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = make_cnn(1 + (len(GROUPS) if with_masks else 0), len(CHEXPERT))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps)))
    )
    y_all = torch.from_numpy(data["labels"]).float()
    model.train()
    order = np.array([], int)
    for _step in range(steps):
        if order.size < batch:
            order = np.concatenate([order, rng.permutation(train_idx)])
        idx, order = order[:batch], order[batch:]
        loss = nn.functional.binary_cross_entropy_with_logits(model(_inputs(data, idx, with_masks)), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def predict(model: nn.Module, data: dict, idx: np.ndarray, with_masks: bool) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [torch.sigmoid(model(_inputs(data, idx[i : i + 256], with_masks))).numpy() for i in range(0, len(idx), 256)]
    )


def f1(y: np.ndarray, p: np.ndarray, t: float) -> float:
    pred = p >= t
    tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y], p[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def evaluate(pv, yv, pt, yt) -> dict:
    out = {}
    for j, o in enumerate(CHEXPERT):
        grid = np.linspace(0.02, 0.98, 49)
        best = max(grid, key=lambda t: np.nan_to_num(f1(yv[:, j], pv[:, j], t), nan=-1))
        out[o] = {
            "f1": f1(yt[:, j], pt[:, j], best),
            "auroc": auroc(yt[:, j], pt[:, j]),
            "threshold": float(best),
            "test_pos": int(yt[:, j].sum()),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default="/tmp/synthcxr_cnn")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=750)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    n = int(np.ceil(max(args.sizes) / 0.8))
    data = build_cache(cache / f"seed{args.seed}_{args.image_size}px.npz", n, args.seed, args.image_size)
    split = data["split"][:n]
    tr, va, te = (np.flatnonzero(split == s) for s in ("train", "validation", "test"))
    y = data["labels"].astype(bool)
    results = {
        "version": VERSION,
        "image_size": args.image_size,
        "steps": args.steps,
        "batch": args.batch,
        "n_validation": len(va),
        "n_test": len(te),
        "runs": {},
    }
    for size in args.sizes:
        for with_masks in (False, True):
            t0 = time.perf_counter()
            model = train(data, tr[:size], with_masks, args.steps, args.batch, args.seed)
            res = evaluate(predict(model, data, va, with_masks), y[va], predict(model, data, te, with_masks), y[te])
            name = f"N={size} {'image+masks' if with_masks else 'image only'}"
            macro = np.nanmean([r["f1"] for r in res.values()])
            results["runs"][name] = {"per_label": res, "macro_f1": float(macro), "seconds": time.perf_counter() - t0}
            print(
                f"{name}: macro-F1 {macro:.3f} ({time.perf_counter() - t0:.0f}s) "
                + ", ".join(f"{o} {r['f1']:.2f}" for o, r in res.items()),
                flush=True,
            )
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    runs = list(results["runs"])
    lines = ["| observation (test positives) | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    first = results["runs"][runs[0]]["per_label"]
    for o in CHEXPERT:
        cells = [
            f"{results['runs'][r]['per_label'][o]['f1']:.2f} / {results['runs'][r]['per_label'][o]['auroc']:.2f}"
            for r in runs
        ]
        lines.append(f"| {o} ({first[o]['test_pos']}) | " + " | ".join(cells) + " |")
    lines.append("| macro-F1 | " + " | ".join(f"{results['runs'][r]['macro_f1']:.3f}" for r in runs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
