"""Issue 20's must-show check, run the way a user would: `asarg generate --json` on 400 studies of a SynthCXR seed the
project never used, then `asarg evaluate`, then each floor of the issue, pass or fail.

    python benchmarks/quality/report_floors.py [--model DIR] [--data runs/data/synth-7070] \
        [--headroom docs/results/report_headroom_default_model.json]

Floors: CE micro-F1 >= 0.50 and macro-F1 >= 0.35; per label F1: Support Devices >= 0.55, Pleural Effusion >= 0.45,
Cardiomegaly >= 0.70, Edema >= 0.75, Lung Opacity >= 0.20, Pneumothorax > 0; distinct reports >= 50% of films; and,
with `--headroom` (the same-input classifier of `benchmarks/quality/report_headroom.py` on the same studies), report F1 >=
0.85 x the classifier's for every label with >= 30 test positives. Writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from asarg.processing.synthcxr.dataset import SPLITS, read_manifest

FLOORS = {"Support Devices": 0.55, "Pleural Effusion": 0.45, "Cardiomegaly": 0.70, "Edema": 0.75, "Lung Opacity": 0.20}


def asarg(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "asarg.cli", *argv], check=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--data", default="runs/data/synth-7070")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--headroom", help="report_headroom.py JSON of the same studies (the classifier's F1)")
    p.add_argument("--out", default="docs/results/report_floors.json")
    args = p.parse_args(argv)
    folder = Path(args.data)
    records = [r for split in SPLITS for r in read_manifest(folder, split)][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reports = tmp / "reports.jsonl"
        model = ["--model", args.model] if args.model else []
        asarg("generate", *[str(folder / r["image"]) for r in records], *model, "--json", "--out", str(reports))
        generated = [json.loads(line)["report"] for line in reports.read_text().splitlines()]
        for name, texts in (("pred.csv", generated), ("ref.csv", [r["findings_text"] for r in records])):
            with open(tmp / name, "w", newline="") as f:
                csv.writer(f).writerows([["report"], *[[t] for t in texts]])
        scores_path = tmp / "scores.json"
        asarg("evaluate", "--predictions", str(tmp / "pred.csv"), "--references", str(tmp / "ref.csv"), "--json",
              str(scores_path))  # fmt: skip
        scores = json.loads(scores_path.read_text())
    per = scores["per_label"]
    checks = {
        "micro >= 0.50": scores["f1_micro"] >= 0.50,
        "macro >= 0.35": scores["f1_macro"] >= 0.35,
        **{f"{label} >= {floor}": per[label]["f1"] >= floor for label, floor in FLOORS.items()},
        "Pneumothorax > 0": per["Pneumothorax"]["f1"] > 0,
        "distinct reports >= 50%": len(set(generated)) / len(generated) >= 0.5,
    }
    if args.headroom:
        classifier = json.loads(Path(args.headroom).read_text())["same_input_classifier"]["per_label"]
        for label, value in per.items():
            if value["support"] >= 30:
                checks[f"{label} >= 0.85 x classifier"] = value["f1"] >= 0.85 * classifier[label]["f1"]
    result = {
        "model": args.model or "embedded default model",
        "data": str(folder),
        "studies": len(records),
        "f1_micro": scores["f1_micro"],
        "f1_macro": scores["f1_macro"],
        "per_label_f1": {label: value["f1"] for label, value in per.items()},
        "distinct_reports": len(set(generated)) / len(generated),
        "checks": checks,
        "all_pass": all(checks.values()),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"micro {result['f1_micro']:.3f}  macro {result['f1_macro']:.3f}  distinct {result['distinct_reports']:.1%}")


if __name__ == "__main__":
    main()
