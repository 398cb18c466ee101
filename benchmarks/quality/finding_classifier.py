"""What the finding tokens carry: the per-observation validation AUROC of a checkpoint's finding classifier (finding
tokens) or linear finding head, against the labeler's labels of the reference reports (issue 20's diagnosis of R6
and R7).

    python benchmarks/quality/finding_classifier.py --model runs/r20/runs/R7 --data runs/data/synth-606 [--n 400]

Reads the first `--n` studies of `--data`'s validation split (never a test split); prints one JSON line per
observation with at least one positive and one negative, then the mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from asarg.evaluation.report_labeler.findings import finding_label_rows, finding_names
from asarg.processing.inference import load_for_generation
from asarg.processing.synthcxr.dataset import read_manifest


@torch.inference_mode()
def finding_logits(model, processor, images: list, batch_size: int = 32) -> np.ndarray:
    """(N, K) logits of the model's finding classifier (finding tokens) or linear finding head for `images`."""
    base, rows = model.model, []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        inputs = processor(images=chunk, text=[processor.image_token] * len(chunk), return_tensors="pt")
        encoded = base.get_image_features(
            inputs["pixel_values"], seg_pixel_values=inputs.get("seg_pixel_values"), return_dict=True
        )
        tokens = torch.stack(list(encoded.pooler_output))
        if base.finding_tokens is not None:
            rows.append(encoded.finding_logits)
        elif model.finding_head is not None:
            rows.append(model.finding_head(tokens.mean(1)))
        else:
            raise ValueError("this model has no finding classifier (finding_loss_weight 0 and no finding tokens)")
    return torch.cat(rows).float().numpy()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--data", required=True, help="SynthCXR folder; its validation split is read")
    p.add_argument("--n", type=int, default=400)
    args = p.parse_args(argv)
    model, processor = load_for_generation(args.model)
    folder = Path(args.data)
    studies = read_manifest(folder, "validation")[: args.n]
    logits = finding_logits(model, processor, [Image.open(folder / r["image"]).convert("L") for r in studies])
    sides = model.config.finding_sides or ()
    labels = finding_label_rows([r["findings_text"] for r in studies], sides)
    auroc = {}
    for k, name in enumerate(finding_names(sides)):
        known = labels[:, k] >= 0  # a side the report leaves unknown is not scored
        if 0 < (labels[known, k] == 1).sum() < known.sum():
            auroc[name] = round(float(roc_auc_score(labels[known, k] == 1, logits[known, k])), 3)
    print(json.dumps({"model": args.model, "studies": len(studies), "auroc": auroc}))
    observations = [v for name, v in auroc.items() if "(" not in name]
    print(json.dumps({"mean_auroc (the 14 observations)": round(float(np.mean(observations)), 3)}))


if __name__ == "__main__":
    main()
