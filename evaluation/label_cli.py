"""`asarg label`: label a CSV of reports with the 14 CheXpert observations (CheXpert labeler's output format)."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from asarg.processing.outputs import add_output_file_option, check_output_file, staged_file
from asarg.processing.text_io import read_csv

from .report_labeler.api import LABELERS, label_reports
from .report_labeler.constants import CHEXPERT_LABELS


def read_csv_column(path: Path, column: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV, checking that `column` exists."""
    if not path.is_file():
        raise ValueError(f"Input file {path} does not exist.")
    header, rows = read_csv(path)
    if column not in header:
        raise ValueError(f"{path} has no column {column!r}; its columns are {header}. Pass --column.")
    if not rows:
        raise ValueError(f"{path} has a header but no reports: nothing to label.")
    return header, rows


def format_value(v: float) -> str:
    # Same cells as the CheXpert labeler's CSV: 1.0 / 0.0 / -1.0, empty for blank.
    return "" if math.isnan(v) else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asarg label", description=__doc__)
    # Inputs are positional in every command; `--input` is this command's older spelling, still accepted.
    parser.add_argument("csv", nargs="?", type=Path, help="CSV file with one report per row")
    parser.add_argument("--input", dest="csv_option", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--column", default="findings", help="column holding the report text (default: %(default)s)")
    add_output_file_option(parser, "CSV to write: input columns + 14 label columns")
    parser.add_argument("--labeler", choices=LABELERS, default="chexpert-rules")
    parser.add_argument("--chexbert-path", help="local chexbert.pth (with --labeler chexbert)")
    args = parser.parse_args(argv)
    if (args.csv is None) == (args.csv_option is None):
        parser.error("give the CSV to label once: `asarg label REPORTS.csv --output LABELS.csv`")
    if args.output is None:
        parser.error("--output LABELS.csv is required")
    args.input = args.csv if args.csv is not None else args.csv_option
    try:
        args.output = check_output_file(args.output, [args.input], overwrite=args.overwrite, what="--output")
        header, rows = read_csv_column(args.input, args.column)
        clash = sorted(set(header) & set(CHEXPERT_LABELS))
        if clash:
            raise ValueError(f"{args.input} already has label columns {clash}; rename them first.")
        values = label_reports([r[args.column] or "" for r in rows], args.labeler, args.chexbert_path)
    except ValueError as err:
        print(f"asarg label: {err}", file=sys.stderr)
        return 2
    with staged_file(args.output, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + list(CHEXPERT_LABELS))
        for row, vals in zip(rows, values, strict=True):
            writer.writerow([row[h] for h in header] + [format_value(v) for v in vals])
    print(f"labelled {len(rows)} reports -> {args.output}")
    return 0
