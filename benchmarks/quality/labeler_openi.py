"""Agreement of the rule-based labeler with real gold labels: Open-i / IU X-ray (NegBio gold, development split).

    python benchmarks/quality/labeler_openi.py [--data ../shared/data/openi] [--floor 0.90]

Reads `indiana_reports.csv` (report text) and `openi_gold_dev.csv` (gold, ChestX-ray14 schema, positive-only, plus
`normal`), labels findings + impression joined (the gold was coded from both), and scores the 8 directly mapped
observations. A labeler value counts as positive when it is 1 (the R2Gen reading, the CE metric's default); the last
column shows F1 when uncertain (-1) also counts. The gold is positive-only MeSH coding: it codes listed differentials
("atelectasis or scarring") and "probable" findings as present but not "may represent" / "no definite", so neither
reading matches it exactly. Exits 1 below the floor.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from asarg.evaluation.report_labeler import CHEXPERT_LABELS, RuleLabeler

REPO = Path(__file__).resolve().parents[2]

DEFAULT_DATA = REPO.parent / "shared" / "data" / "openi"
FLOOR = 0.90
# Gold column (ChestX-ray14 / Open-i) -> CheXpert observation, the direct mapping of the data README.
MAPPING = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "normal": "No Finding",
}


def load_openi(data_dir: Path = DEFAULT_DATA) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, report texts, gold (N, 8) in MAPPING order). A missing folder is an error, never a skip."""
    reports_csv, gold_csv = data_dir / "indiana_reports.csv", data_dir / "openi_gold_dev.csv"
    missing = [str(p) for p in (reports_csv, gold_csv) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Open-i benchmark data not found: {', '.join(missing)}. It lives in the shared folder beside the "
            "checkout (../shared/data/openi/); pass --data to point elsewhere."
        )
    with reports_csv.open(newline="", encoding="utf-8") as f:
        texts = {f"CXR{row['uid']}": _join(row["findings"], row["impression"]) for row in csv.DictReader(f)}
    ids, reports, gold = [], [], []
    with gold_csv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["filename"] not in texts:
                raise ValueError(f"{gold_csv}: {row['filename']} has no report in {reports_csv}.")
            ids.append(row["filename"])
            reports.append(texts[row["filename"]])
            gold.append([int(row[col]) for col in MAPPING])
    return ids, reports, np.asarray(gold, dtype=int)


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def prf(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float, float, int, int, int]:
    tp = int((pred & gold).sum())
    fp, fn = int((pred & ~gold).sum()), int((~pred & gold).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, tp, fp, fn


def run_openi_benchmark(data_dir: Path = DEFAULT_DATA, verbose: bool = True) -> dict:
    """Label the Open-i development split and score it; returns {"micro_f1", "per_label", "reports_per_s", ...}."""
    _, reports, gold = load_openi(Path(data_dir))
    t0 = time.perf_counter()
    labels = np.asarray(RuleLabeler().label_many(reports), dtype=float)
    elapsed = time.perf_counter() - t0
    cols = [CHEXPERT_LABELS.index(MAPPING[c]) for c in MAPPING]
    values = labels[:, cols]
    gold_b = gold.astype(bool)
    result = {"n_reports": len(reports), "reports_per_s": len(reports) / elapsed, "per_label": {}}
    for name, pred in (("r2gen", values == 1), ("uncertain_positive", (values == 1) | (values == -1))):
        per = {MAPPING[c]: prf(pred[:, j], gold_b[:, j]) for j, c in enumerate(MAPPING)}
        result["per_label"][name] = per
        result[f"micro_f1_{name}"] = prf(pred.ravel(), gold_b.ravel())[2]
    result["micro_f1"] = result["micro_f1_r2gen"]
    if verbose:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    lines = [
        f"Open-i development split: {result['n_reports']} reports, {result['reports_per_s']:.0f} reports/s",
        f"{'observation':<18} {'gold':>5} {'P':>6} {'R':>6} {'F1':>6} {'TP':>5} {'FP':>5} {'FN':>5}   F1 if -1 counts",
    ]
    main, alt = result["per_label"]["r2gen"], result["per_label"]["uncertain_positive"]
    for name, (p, r, f, tp, fp, fn) in main.items():
        lines.append(
            f"{name:<18} {tp + fn:>5} {p:>6.3f} {r:>6.3f} {f:>6.3f} {tp:>5} {fp:>5} {fn:>5}   {alt[name][2]:.3f}"
        )
    lines.append(
        f"micro-F1 over the 8 mapped observations: {result['micro_f1']:.4f} (positive = 1; "
        f"with uncertain as positive: {result['micro_f1_uncertain_positive']:.4f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the two Open-i CSV files")
    parser.add_argument("--floor", type=float, default=FLOOR, help="fail below this micro-F1 (default %(default)s)")
    args = parser.parse_args(argv)
    result = run_openi_benchmark(args.data)
    if result["micro_f1"] < args.floor:
        print(f"FAIL: micro-F1 {result['micro_f1']:.4f} is below the floor {args.floor}", file=sys.stderr)
        return 1
    print(f"OK: micro-F1 {result['micro_f1']:.4f} >= floor {args.floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
