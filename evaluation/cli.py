"""`asarg evaluate`: CE scores (and optionally NLG metrics and paired significance against a baseline) of generated
reports, printed as a table; with `--variants` also the literature's eight CE F1 variants (14 / 5 labels, micro /
macro, uncertain negative / positive) in one table; with `--chart PATH` a per-label F1 bar chart, with `--json PATH`
every score.

Output paths are checked before anything is computed: the folder a file goes into must already exist (none is
created: a typo in a path should be an error, not a new folder somewhere, and as root that somewhere can be `/`),
the path must not be a folder, an input file or the other output. Reports are paired by row; when both files have an
id column (`id`, `study_id`, `dicom_id`) the ids must agree row by row, and `--id-column NAME` pairs by id instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from asarg.evaluation.clinical_efficacy import (
    LABEL_SET_CHOICES,
    UNCERTAIN_CHOICES,
    compute_ce,
    format_variants_table,
)
from asarg.evaluation.report_labeler.api import LABELERS
from asarg.processing.text_io import read_csv, read_text

ID_COLUMNS = ("id", "study_id", "dicom_id")
CHART_SUFFIXES = (".png", ".pdf", ".svg")


def read_records(path: Path) -> tuple[list | None, list[str] | None]:
    """(records, CSV column names) of a .csv / .jsonl / .json file; (None, None) for .txt, which has no fields."""
    if not path.is_file():
        raise ValueError(f"File {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return None, None
    if suffix == ".csv":
        header, rows = read_csv(path)
        return rows, header
    if suffix in {".jsonl", ".json"}:
        text = read_text(path)
        try:
            records = (
                json.loads(text) if suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
            )
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}).") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of records, got a JSON {type(records).__name__}.")
        return records, None
    raise ValueError(f"{path}: use a .csv, .jsonl, .json or .txt file.")


def read_reports(path: Path, column: str) -> list[str]:
    """Reports from .csv (column), .jsonl / .json (field of each record) or .txt (one report per line)."""
    records, columns = read_records(path)
    if records is None:
        return read_text(path).splitlines()
    if columns is not None and column not in columns:
        raise ValueError(f"{path} has no column {column!r}; its columns are {columns}.")
    missing = [i for i, r in enumerate(records) if not isinstance(r, dict) or column not in r]
    if missing:
        raise ValueError(f"{path}: record {missing[0]} has no field {column!r}.")
    return [r[column] if r[column] is not None else "" for r in records]


def read_ids(path: Path, column: str | None) -> dict[str, list[str]]:
    """{id column: ids} of a file's records: `column` (which every record must have), else each of ID_COLUMNS that
    every record has ({} for a .txt file or no such column)."""
    records, _ = read_records(path)
    if column and not records:
        raise ValueError(f"--id-column {column}: {path} has no records with fields to take ids from.")
    has = [
        c for c in ([column] if column else ID_COLUMNS) if all(isinstance(r, dict) and c in r for r in records or [])
    ]
    if column and not has:
        raise ValueError(f"--id-column {column}: {path} has records without {column!r}.")
    return {c: [str(r[c]) for r in records] for c in has}


def common_ids(theirs: dict, wanted: dict) -> tuple[list[str] | None, list[str] | None]:
    """The ids of the first id column both files have (None, None: they share none, so rows pair by order)."""
    shared = next((c for c in wanted if c in theirs), None)
    return (theirs[shared], wanted[shared]) if shared else (None, None)


def pair_by_id(texts: list[str], ids: list[str] | None, wanted: list[str] | None, path: Path, by_id: bool):
    """`texts` in the order of the predictions' ids `wanted`. Without --id-column the ids must already agree row by
    row (a silent misalignment would score every report against another study's); with it they are matched."""
    if ids is None or wanted is None:
        return texts
    for name, values in (("this file", ids), ("the predictions", wanted)) if by_id else ():
        dupes = sorted(i for i, n in Counter(values).items() if n > 1)
        if dupes:
            raise ValueError(f"{path}: {name} repeat ids {dupes[:3]}; pairing by id needs each id once.")
    if not by_id:
        bad = next((n for n, (a, b) in enumerate(zip(wanted, ids)) if a != b), None)
        if bad is not None:
            raise ValueError(
                f"{path}: row {bad + 1} is study {ids[bad]!r} but the prediction in that row is {wanted[bad]!r}; the "
                "files are in different orders. Sort them the same way or pass --id-column to pair them by id."
            )
        return texts
    index = dict(zip(ids, texts))
    missing = [i for i in wanted if i not in index]
    if missing or len(ids) != len(wanted):
        extra = sorted(set(ids) - set(wanted))
        raise ValueError(f"{path}: ids differ from the predictions' (missing {missing[:3]}, extra {extra[:3]}).")
    return [index[i] for i in wanted]


def check_outputs(args) -> None:
    """Fail before any work when an output could not be written or would overwrite an input (see module doc)."""
    inputs = {p.resolve() for p in (args.predictions, args.references, args.baseline) if p is not None}
    outputs = [(flag, p) for flag, p in (("--chart", args.chart), ("--output", args.output)) if p is not None]
    if len(outputs) == 2 and args.chart.resolve() == args.output.resolve():
        raise ValueError("--chart and --output are the same file; give two paths.")
    for flag, path in outputs:
        parent = path.resolve().parent
        if path.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file path inside it.")
        if path.resolve() in inputs:
            raise ValueError(f"{flag} {path} is one of the input files; it would be overwritten.")
        if not parent.is_dir():
            raise ValueError(f"{flag} {path}: folder {parent} does not exist (it is not created); make it first.")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"{flag} {path}: folder {parent} is not writable.")
    if args.chart is not None and args.chart.suffix.lower() not in CHART_SUFFIXES:
        raise ValueError(f"--chart {args.chart}: use a {', '.join(CHART_SUFFIXES)} file name.")


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
    fig.savefig(path, dpi=120)  # check_outputs made sure its folder exists: none is created here
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asarg evaluate", description=__doc__)
    p.add_argument("--predictions", required=True, type=Path, help="generated reports (.csv/.jsonl/.json/.txt)")
    p.add_argument("--references", required=True, type=Path, help="reference reports of the same studies, same order")
    p.add_argument("--id-column", help="pair the files by this id column/field instead of by row")
    p.add_argument("--column", default="report", help="CSV column / JSON field with the text (default: %(default)s)")
    p.add_argument("--prediction-column", help="column in --predictions if it differs from --column")
    p.add_argument("--reference-column", help="column in --references if it differs from --column")
    p.add_argument("--labeler", choices=LABELERS, default="chexpert-rules")
    p.add_argument("--chexbert-path", help="local chexbert.pth (with --labeler chexbert)")
    p.add_argument("--uncertain", choices=UNCERTAIN_CHOICES, default="negative")
    p.add_argument("--labels", type=int, choices=LABEL_SET_CHOICES, default=14)
    p.add_argument(
        "--variants",
        action="store_true",
        help="also the literature's eight CE F1 variants in one table: Micro/Macro-F1-14 and -5, uncertain counted "
        "negative, and with '+' positive (LLaVA-Rad, CheXagent, R2Gen names)",
    )
    p.add_argument(
        "--chart", type=Path, help="write a per-label F1 bar chart here (.png/.pdf/.svg; folder must exist)"
    )
    p.add_argument("--output", type=Path, help="also write all scores to this JSON file (its folder must exist)")
    p.add_argument("--json", dest="output", type=Path, help=argparse.SUPPRESS)  # the older name of --output
    p.add_argument("--nlg", action="store_true", help="also compute BLEU-1..4, METEOR, ROUGE-L, CIDEr")
    p.add_argument("--baseline", type=Path, help="reports of a second system: paired bootstrap CI + permutation test")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap / permutation resamples (default 1000)")
    return p


def read_inputs(args) -> tuple[list[str], list[str], list[str] | None]:
    """(predictions, references, baseline or None), the last two in the predictions' order (see `pair_by_id`)."""
    column, by_id = args.prediction_column or args.column, args.id_column is not None
    preds = read_reports(args.predictions, column)
    wanted = read_ids(args.predictions, args.id_column)
    refs = read_reports(args.references, args.reference_column or args.column)
    refs = pair_by_id(refs, *common_ids(read_ids(args.references, args.id_column), wanted), args.references, by_id)
    if args.baseline is None:
        return preds, refs, None
    base = read_reports(args.baseline, column)
    return (
        preds,
        refs,
        pair_by_id(base, *common_ids(read_ids(args.baseline, args.id_column), wanted), args.baseline, by_id),
    )


def evaluate(args, preds, refs, base) -> dict:
    definition = {"labeler": args.labeler, "uncertain": args.uncertain, "labels": args.labels}
    definition["chexbert_path"] = args.chexbert_path
    result = compute_ce(preds, refs, **definition, variants=args.variants)
    print(format_table(result))
    if args.variants:
        print("\n" + format_variants_table(result["variants"], args.labeler))
    if args.nlg:
        from asarg.evaluation.nlg_metrics import compute_nlg

        result["nlg"] = compute_nlg(preds, refs)
        print("\n" + "  ".join(f"{k} {v:.4f}" for k, v in result["nlg"].items()))
    if base is not None:
        from asarg.evaluation.significance import compare_systems

        sig = compare_systems(preds, base, refs, n_resamples=args.resamples, **definition)
        result["significance_vs_baseline"] = sig
        b, perm = sig["bootstrap"], sig["permutation"]
        print(
            f"\nvs baseline: {sig['metric']} {sig['score_a']:.4f} vs {sig['score_b']:.4f}, difference "
            f"{b['difference']:+.4f} (95% CI {b['ci_low']:+.4f} to {b['ci_high']:+.4f}), "
            f"permutation p = {perm['p_value']:.4g}"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        check_outputs(args)  # before the work: a bad path must not cost the scores
        if args.resamples < 1:
            raise ValueError(f"--resamples {args.resamples}: give at least 1 (1000 or more for a usable CI)")
        result = evaluate(args, *read_inputs(args))
    except (ValueError, RuntimeError) as err:
        print(f"asarg evaluate: {err}", file=sys.stderr)
        return 2
    try:
        if args.chart:
            print(f"\nper-label F1 chart -> {plot_per_label_f1(result, args.chart)}")
        if args.output:
            args.output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    except OSError as err:  # checked up front; what is left is the disk filling up or the folder vanishing
        print(
            f"asarg evaluate: could not write {err.filename or 'the output'}: {err.strerror or err}", file=sys.stderr
        )
        return 1
    return 0
