"""Does a small-synth model read the film? Generate reports for the test split and score them against image-blind
reports (a fixed normal report and the most frequent training report), CE-F1 by the project's labeler.

    python benchmarks/small_synth_calibration.py --data data/synthcxr-rg --model runs/calib/baseline \\
        [--model runs/calib/features+maps ...] [--n 250] [--json runs/calib/scores.json]

Prints one row per model and per image-blind report: CE micro / macro F1, distinct reports, and F1 of the
anatomy-defined findings (cardiomegaly, pleural effusion, pneumothorax, support devices).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from PIL import Image

from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.generate import generate_reports, load_for_generation
from asarg.processing.synthcxr.dataset import read_manifest

NORMAL_REPORT = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
FOCUS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices", "No Finding")


def score(name: str, predictions: list[str], references: list[str]) -> dict:
    ce = compute_ce(predictions, references)
    per_label = ce.get("per_label", {})
    return {
        "system": name,
        "f1_micro": round(ce["f1_micro"], 4),
        "f1_macro": round(ce["f1_macro"], 4),
        "distinct_reports": len(set(predictions)),
        **{label: round(per_label.get(label, {}).get("f1", float("nan")), 4) for label in FOCUS},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--n", type=int, default=250)
    p.add_argument("--json")
    args = p.parse_args(argv)
    test = read_manifest(args.data, "test")[: args.n]
    references = [rec["findings_text"] for rec in test]
    train_reports = [rec["findings_text"] for rec in read_manifest(args.data, "train")]
    frequent = Counter(train_reports).most_common(1)[0][0]
    rows = [
        score("fixed normal report", [NORMAL_REPORT] * len(test), references),
        score("most frequent training report", [frequent] * len(test), references),
    ]
    images = [Image.open(Path(args.data) / rec["image"]).convert("L") for rec in test]
    for model_dir in args.model:
        model, processor = load_for_generation(model_dir)
        rows.append(score(model_dir, generate_reports(model, processor, images, batch_size=16), references))
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        print(" | ".join(str(v) for v in row.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
