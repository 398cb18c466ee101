"""`asarg evaluate`: CE scores (and optionally NLG metrics and paired significance against a baseline) of generated
reports, printed as a table, with a per-label F1 bar chart."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from asarg.evaluation.clinical_efficacy import LABEL_SET_CHOICES, UNCERTAIN_CHOICES, compute_ce
from asarg.evaluation.report_labeler.api import LABELERS


def read_reports(path: Path, column: str) -> list[str]:
    """Reports from .csv (column), .jsonl / .json (field of each record) or .txt (one report per line)."""
    if not path.is_file():
        raise ValueError(f"File {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return path.read_text(encoding="utf-8").splitlines()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise ValueError(f"{path} has no column {column!r}; its columns are {reader.fieldnames}.")
            return [row[column] or "" for row in reader]
    if suffix in {".jsonl", ".json"}:
        text = path.read_text(encoding="utf-8")
        records = json.loads(text) if suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
        missing = [i for i, r in enumerate(records) if not isinstance(r, dict) or column not in r]
        if missing:
            raise ValueError(f"{path}: record {missing[0]} has no field {column!r}.")
        return [r[column] if r[column] is not None else "" for r in records]
    raise ValueError(f"{path}: use a .csv, .jsonl, .json or .txt file.")


def format_table(result: dict) -> str:
    lines = [result["definition"], f"{result['num_reports']} report pairs", ""]
    lines.append(f"{'':<10} {'precision':>9} {'recall':>9} {'F1':>9}")
    for avg in ("micro", "macro", "example"):
        p, r, f = (result[f"{m}_{avg}"] for m in ("precision", "recall", "f1"))
        lines.append(f"{avg:<10} {p:>9.4f} {r:>9.4f} {f:>9.4f}")
    lines += ["", f"{'label':<28} {'P':>7} {'R':>7} {'F1':>7} {'support':>8} {'predicted':>9}"]
    for name, s in result["per_label"].items():
        lines.append(
            f"{name:<28} {s['precision']:>7.3f} {s['recall']:>7.3f} {s['f1']:>7.3f} "
            f"{s['support']:>8} {s['predicted']:>9}"
        )
    return "\n".join(lines)


def plot_per_label_f1(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    names = list(result["per_label"])
    f1 = [result["per_label"][n]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    ax.barh(names[::-1], f1[::-1], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(f"CE per-label F1 (micro {result['f1_micro']:.3f}, macro {result['f1_macro']:.3f})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asarg evaluate", description=__doc__)
    p.add_argument("--predictions", required=True, type=Path, help="generated reports (.csv/.jsonl/.json/.txt)")
    p.add_argument("--references", required=True, type=Path, help="reference reports of the same studies, same order")
    p.add_argument("--column", default="report", help="CSV column / JSON field with the text (default: %(default)s)")
    p.add_argument("--prediction-column", help="column in --predictions if it differs from --column")
    p.add_argument("--reference-column", help="column in --references if it differs from --column")
    p.add_argument("--labeler", choices=LABELERS, default="chexpert-rules")
    p.add_argument("--chexbert-path", help="local chexbert.pth (with --labeler chexbert)")
    p.add_argument("--uncertain", choices=UNCERTAIN_CHOICES, default="negative")
    p.add_argument("--labels", type=int, choices=LABEL_SET_CHOICES, default=14)
    p.add_argument(
        "--chart", type=Path, default=Path("ce_per_label_f1.png"), help="bar chart PNG (default: %(default)s)"
    )
    p.add_argument("--json", type=Path, help="also write all scores to this JSON file")
    p.add_argument("--nlg", action="store_true", help="also compute BLEU-1..4, METEOR, ROUGE-L, CIDEr")
    p.add_argument("--baseline", type=Path, help="reports of a second system: paired bootstrap CI + permutation test")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap / permutation resamples (default 1000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    definition = {"labeler": args.labeler, "uncertain": args.uncertain, "labels": args.labels}
    definition["chexbert_path"] = args.chexbert_path
    try:
        preds = read_reports(args.predictions, args.prediction_column or args.column)
        refs = read_reports(args.references, args.reference_column or args.column)
        result = compute_ce(preds, refs, **definition)
        print(format_table(result))
        if args.nlg:
            from asarg.evaluation.nlg_metrics import compute_nlg

            result["nlg"] = compute_nlg(preds, refs)
            print("\n" + "  ".join(f"{k} {v:.4f}" for k, v in result["nlg"].items()))
        if args.baseline:
            from asarg.evaluation.significance import compare_systems

            base = read_reports(args.baseline, args.prediction_column or args.column)
            sig = compare_systems(preds, base, refs, n_resamples=args.resamples, **definition)
            result["significance_vs_baseline"] = sig
            b, perm = sig["bootstrap"], sig["permutation"]
            print(
                f"\nvs baseline: {sig['metric']} {sig['score_a']:.4f} vs {sig['score_b']:.4f}, difference "
                f"{b['difference']:+.4f} (95% CI {b['ci_low']:+.4f} to {b['ci_high']:+.4f}), "
                f"permutation p = {perm['p_value']:.4g}"
            )
    except (ValueError, RuntimeError) as err:
        print(f"asarg evaluate: {err}", file=sys.stderr)
        return 2
    print(f"\nper-label F1 chart -> {plot_per_label_f1(result, args.chart)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0
