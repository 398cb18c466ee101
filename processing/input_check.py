"""Is this a frontal chest radiograph the model can read? Four checks, cheapest first, each with a reason a person can
act on:

1. **DICOM header** (when the film is DICOM): Modality must be a radiograph (CR, DX, DR), BodyPartExamined (when
   present) the chest, ViewPosition (when present) frontal (PA / AP), not lateral.
2. **Pixels**: not blank (almost no contrast), not far from square (a chest film's sides differ by less than 2×).
3. **Anatomy**, from the model's own segmenter: both lungs and the heart where a frontal chest film has them (the
   right lung on the image's left, the heart between the lungs), each covering a plausible share of the film. Applied
   only when the check passed on at least 99% of the model's own training films (recorded with the statistics).
4. **Distance from the model's training films**: the Mahalanobis distance of the film's features (the vision tower's
   mean token and the segmenter's per-class coverage) from those of the model's own training films, stored with
   the model (`input_stats.safetensors`, written by `fit_input_stats` / `python -m asarg.processing.input_check`).
   The distance cannot tell a real chest film from a synthetic one reliably (measured: `benchmarks/quality/input_check.py`),
   so a DICOM film read by a model trained on synthetic films only is also flagged from the model's own record.

Checks 1-3 failing mean the input is not a frontal chest radiograph: `verdict["refuse"]` is True and tools refuse to
report on it. Check 4 failing alone is a warning: a chest film unlike the training films (a real radiograph for a
model trained on synthetic ones), reported with that said. `check_input` returns the verdict as a dict (JSON-ready).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .checkpoints import write_checksums
from .inference import prompt_text

STATS_FILE = "input_stats.safetensors"
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG"}
CHEST_BODY_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_LAT", "TORSO"}
FRONTAL_VIEWS = {"PA", "AP", "AP SUPINE", "AP UPRIGHT", "POSTERO-ANTERIOR", "ANTERO-POSTERIOR"}
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}
MAX_ASPECT = 2.0
MIN_CONTRAST = 4.0  # standard deviation of the 8-bit grey levels
ANATOMY = ("right lung", "left lung", "heart")
# The anatomy check trusts the model's segmenter only when it passed on this share of the model's own training films
# (measured when the statistics are written): an untrained or foreign segmenter would refuse every film.
ANATOMY_VALIDATED = 0.99


# ---- 1. header ------------------------------------------------------------------------------------------------------


def header_problems(header: dict) -> list[str]:
    modality = header.get("Modality", "").upper()
    body = header.get("BodyPartExamined", "").upper()
    view = header.get("ViewPosition", "").upper()
    problems = []
    if modality and modality not in RADIOGRAPH_MODALITIES:
        problems.append(f"the DICOM Modality is {modality}, not a radiograph (CR/DX)")
    if body and body not in CHEST_BODY_PARTS:
        problems.append(f"the DICOM BodyPartExamined is {body}, not the chest")
    if view in LATERAL_VIEWS:
        problems.append(f"the DICOM ViewPosition is {view}: a lateral film; the model reads frontal (PA/AP) films")
    return problems


# ---- 2. pixels ------------------------------------------------------------------------------------------------------


def pixel_problems(image) -> list[str]:
    width, height = image.size
    problems = []
    if max(width, height) > MAX_ASPECT * min(width, height):
        problems.append(
            f"the image is {width}×{height}: a chest film is about square (sides within {MAX_ASPECT:g}×); this one would "
            "be squeezed into a few rows of the model's input"
        )
    grey = np.asarray(image.convert("L").resize((128, 128)), dtype=np.float32)
    if grey.std() < MIN_CONTRAST:
        problems.append(f"the image is blank (grey-level spread {grey.std():.1f} of 255): there is nothing to read")
    return problems


# ---- 3. anatomy -----------------------------------------------------------------------------------------------------


@torch.inference_mode()
def features(model, processor, images: list) -> tuple[np.ndarray, np.ndarray]:
    """(feature vectors (N, D + K), maps (N, K, h, w)): the tower's mean token of the projected layer and the
    segmenter's per-class coverage, and the segmenter's maps."""
    base, config = model.model, model.config
    inputs = processor(images=images, text=[prompt_text(processor)] * len(images), return_tensors="pt")
    hidden = base.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    tower = hidden[config.vision_feature_layer].mean(1)
    maps = base.run_segmenter(inputs["seg_pixel_values"])["maps"]
    coverage = maps.flatten(2).mean(-1)
    return torch.cat([tower, coverage], 1).double().numpy(), maps.float().numpy()


def anatomy_problems(maps: np.ndarray, class_names: list[str]) -> list[str]:
    """Lungs and heart where a frontal chest film has them, from one film's maps (K, h, w)."""
    index = {name: class_names.index(name) for name in ANATOMY if name in class_names}
    if len(index) < len(ANATOMY):
        return []  # a segmenter without these classes cannot say
    found = {}
    for name, k in index.items():
        mask = maps[k]
        share = float(mask.mean())
        if share < 0.01:
            return [f"the segmenter finds no {name} (it covers {share:.1%} of the film)"]
        found[name] = (share, float((mask.sum(0) * np.arange(mask.shape[1])).sum() / mask.sum() / mask.shape[1]))
    right, left, heart = (found[name][1] for name in ANATOMY)
    if not right < heart < left:
        return [
            "the lungs and heart are not where a frontal chest film has them (right lung, heart and left lung at "
            f"{right:.0%}, {heart:.0%} and {left:.0%} of the width)"
        ]
    lungs = found["right lung"][0] + found["left lung"][0]
    if not 0.08 <= lungs <= 0.8:
        return [f"the lungs cover {lungs:.0%} of the film, not the share a chest film shows"]
    return []


# ---- 4. distance from the training films ----------------------------------------------------------------------------


def fit_input_stats(vectors: np.ndarray, quantile: float = 0.995, shrinkage: float = 0.01, held_out: float = 0.25):
    """Mean and shrunk precision matrix from the first films, and the distance threshold: the `quantile` of the
    distances of the last `held_out` share, which the fit has not seen (the fitted films' own distances are smaller,
    so a threshold from them would flag new films of the same kind too often)."""
    split = int(len(vectors) * (1 - held_out))
    fit, calibrate = vectors[:split], vectors[split:]
    mean = fit.mean(0)
    cov = np.cov(fit - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(cov).mean() * np.eye(len(cov))
    stats = {"mean": mean, "precision": np.linalg.inv(cov)}
    distances = [distance(stats, vector) for vector in calibrate]
    return {**stats, "threshold": float(np.quantile(distances, quantile))}


def distance(stats: dict, vector: np.ndarray) -> float:
    centred = vector - stats["mean"]
    return float(np.sqrt(centred @ stats["precision"] @ centred))


def save_input_stats(folder, stats: dict, training_data: str, films: int, anatomy_pass_rate: float) -> Path:
    from safetensors.numpy import save

    tensors = {"mean": stats["mean"], "precision": stats["precision"], "threshold": np.array([stats["threshold"]])}
    metadata = {"training_data": training_data, "films": str(films), "anatomy_pass_rate": f"{anatomy_pass_rate:.4f}"}
    path = Path(folder) / STATS_FILE
    atomic_write(path, save(tensors, metadata=metadata))
    write_checksums(folder)
    return path


def load_input_stats(folder) -> dict | None:
    path = Path(folder) / STATS_FILE if folder else None
    if path is None or not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as handle:
        stats = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
        metadata = handle.metadata() or {}
    stats["threshold"] = float(stats["threshold"][0])
    stats["training_data"] = metadata.get("training_data", "")
    stats["anatomy_pass_rate"] = float(metadata.get("anatomy_pass_rate", 0))
    return stats


# ---- the verdict ----------------------------------------------------------------------------------------------------


def check_input(model, processor, image, header: dict | None = None, stats: dict | None = None) -> dict:
    """The four checks on one film: `{"refuse": bool, "warnings": [...], "reasons": [...], "distance": ...}`.
    `stats` default: the model folder's `input_stats.safetensors` (no distance check without one)."""
    reasons = header_problems(header or {}) + pixel_problems(image)
    verdict = {"refuse": False, "reasons": reasons, "warnings": [], "distance": None, "threshold": None}
    if reasons or model.model.segmenter is None:  # refused already, or no segmenter to look with
        verdict["refuse"] = bool(reasons)
        return verdict
    vector, maps = features(model, processor, [image.convert("RGB") if image.mode not in ("L", "RGB") else image])
    stats = stats if stats is not None else load_input_stats(getattr(model, "name_or_path", None))
    if stats is not None and stats.get("anatomy_pass_rate", 0) >= ANATOMY_VALIDATED:
        reasons += anatomy_problems(maps[0], list(model.config.seg_class_names))
    if stats is not None:
        verdict["distance"], verdict["threshold"] = round(distance(stats, vector[0]), 2), round(stats["threshold"], 2)
        if verdict["distance"] > stats["threshold"]:
            trained_on = stats.get("training_data") or "its training films"
            verdict["warnings"].append(
                f"this film is unlike the films the model was trained on ({trained_on}): distance "
                f"{verdict['distance']:.1f} against at most {verdict['threshold']:.1f} for 99.5% of them, so its "
                "report is a guess, not a reading"
            )
        if header and "synthetic" in stats.get("training_data", "").lower():
            verdict["warnings"].append(
                f"this is a real acquisition (DICOM) and the model was trained on {stats['training_data']}: its "
                "report shows the pipeline at work, not a reading of this patient"
            )
    verdict["refuse"] = bool(reasons)
    return verdict


def summary(verdict: dict) -> str:
    """One sentence for a person: why the film is refused, or what to keep in mind."""
    if verdict["refuse"]:
        return "Not read: " + "; ".join(verdict["reasons"]) + "."
    return ("Caution: " + "; ".join(verdict["warnings"]) + ".") if verdict["warnings"] else ""


def main(argv: list[str] | None = None) -> int:
    """`python -m asarg.processing.input_check --model DIR --data SYNTHCXR [--n 2000]`: fit and store the statistics
    of the model's training films in DIR (and rewrite its checksums)."""
    from PIL import Image

    from .inference import load_for_generation
    from .synthcxr.dataset import read_manifest

    p = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the model folder (the statistics are written into it)")
    p.add_argument("--data", required=True, help="a SynthCXR folder of the model's training films (train split)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--training-data", default="SynthCXR synthetic films only", help="what the model was trained on")
    args = p.parse_args(argv)
    model, processor = load_for_generation(args.model)
    records = read_manifest(args.data, "train")[: args.n]
    vectors, passed = [], 0
    names = list(model.config.seg_class_names)
    for start in range(0, len(records), 64):
        images = [Image.open(Path(args.data) / r["image"]).convert("L") for r in records[start : start + 64]]
        batch, maps = features(model, processor, images)
        vectors.append(batch)
        passed += sum(not anatomy_problems(film, names) for film in maps)
    stats = fit_input_stats(np.concatenate(vectors))
    rate = passed / len(records)
    path = save_input_stats(args.model, stats, args.training_data, len(records), rate)
    summary = {"written": os.fspath(path), "films": len(records), "threshold": stats["threshold"]}
    print(json.dumps({**summary, "anatomy_pass_rate": rate}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
