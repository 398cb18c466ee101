"""Issue 20's screening: which training-recipe change makes the report model write what its inputs show.

    python -m asarg.experiments.report_recipe --out runs/r20 --data runs/data/synth-606 \
        --init runs/r20/base/init/features+maps [--only R1]

Each candidate is the small-synth recipe (`training/recipes/small_synth_cpu.yaml`) with one change, trained from
the same initial checkpoint on the same data and data order (seed 0), then scored on the first `--val` studies of
`--data`'s validation split: never the test split. Per run: `runs/<name>/validation.json` (reports, CE, per-label
F1, distinct reports); a rerun skips finished runs and resumes a killed one. The table of every candidate tried,
failures included, goes to `--table` (JSON + markdown). The plan (arms, endpoint, decision rule) is
`docs/results/report_recipe/PLAN.md`, committed before the first run.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports
from asarg.processing.atomic import atomic_write
from asarg.processing.synthcxr.dataset import read_manifest

from .steps import ReproduceSettings, evaluate_run, train_run

FOCUS = ("Support Devices", "Pleural Effusion", "Cardiomegaly", "Edema", "Lung Opacity", "Pneumothorax")


@dataclass(frozen=True)
class Candidate:
    name: str
    change: str
    overrides: tuple[str, ...] = ()


VOID = "void: the finding loss had no gradient (TRL's fused LM head bypassed it; fixed in session 6)"

CANDIDATES = (
    Candidate("R0", "control: the small-synth recipe on 12,800 studies"),
    # R1 and R1b ran with a finding loss that never reached the model: TRL's fused LM head calls the backbone directly,
    # and the loss was read from a second forward TRL runs without gradients. Kept in the table, marked void.
    Candidate("R1", f"{VOID}; finding loss weight 1.0", ("--finding_loss_weight", "1.0")),
    Candidate("R2", "+ finding-balanced sampling (alpha 0.5)", ("--finding_balance", "0.5")),
    Candidate("R3", "+ vision tower trained", ("--freeze_vision_tower", "false")),
    Candidate("R1b", f"{VOID}; weight 10, zero-weight head", ("--finding_loss_weight", "10.0")),
    # After the fix: the head starts from the training prevalences (bias) with weights of std hidden ** -0.5.
    Candidate("R1c", "+ finding loss (weight 10)", ("--finding_loss_weight", "10.0")),
    Candidate("R1d", "+ finding loss (weight 1.0)", ("--finding_loss_weight", "1.0")),
    # Each of R1c, R1d and R2 is a small gain under the rule's +0.02 macro: do they add up?
    Candidate(
        "R5",
        "+ finding loss (weight 1.0) + finding-balanced sampling (alpha 0.5)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5"),
    ),
    # Issue 21's pilot (docs/results/tracing/PLAN.md): R5 plus the removals tracing makes, for the tracing benchmarks.
    Candidate(
        "T1",
        "R5 + group dropout (0.3) + all-maps dropout (0.1)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5")
        + ("--seg_group_dropout", "0.3", "--seg_all_maps_dropout", "0.1"),
    ),
    # Session 7: the language model reads the finding classifier's verdicts (PLAN.md, R6).
    Candidate(
        "R6",
        "R5 + finding tokens (the finding classifier's verdicts as one image token per finding)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true"),
    ),
    # R6's classifier was still weak after 800 joint steps (Support Devices AUROC 0.55): align it first (PLAN.md, R7).
    Candidate(
        "R7",
        "R6 + finding alignment (projector + classifier on the findings alone first, thresholds on held-out studies)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + ("--finding_alignment_epochs", "40"),
    ),
    # Session 8: the language model learns to write what a token asserts (PLAN.md, R8).
    Candidate(
        "R8",
        "R7 + verdict forcing (finding tokens from the study's labels for half the training samples)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + ("--finding_alignment_epochs", "40", "--finding_token_label_rate", "0.5"),
    ),
    # Session 8, issue 21: the verdicts carry the side (docs/results/tracing/PLAN.md, R9).
    Candidate(
        "R9",
        "R7 + sided finding tokens (right and left of each one-sided observation)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + ("--finding_alignment_epochs", "40", "--finding_sides", "all"),
    ),
    # Session 9: the report opens with what the film shows (PLAN.md, R10).
    Candidate(
        "R10",
        "R8 + findings-first training reports (devices, then other asserted findings, then the rest); corrected prompt",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + (
            "--finding_alignment_epochs",
            "40",
            "--finding_token_label_rate",
            "0.5",
            "--report_order",
            "findings_first",
        ),
    ),
    # R10's device sentences are imprecise: the opening follows the token only when training always forces it (R12).
    Candidate(
        "R12",
        "R10 with verdict forcing at rate 1.0 (every training sample's finding tokens from its labels); corrected prompt",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + (
            "--finding_alignment_epochs",
            "40",
            "--finding_token_label_rate",
            "1.0",
            "--report_order",
            "findings_first",
        ),
    ),
    # Issue 21 (docs/results/tracing/PLAN.md, R11): the sided tokens pool only their side's anatomy.
    Candidate(
        "R11",
        "R10 + sided finding tokens gated by anatomy (each side's token pools only that side's patches)",
        ("--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--finding_tokens", "true")
        + ("--finding_alignment_epochs", "40", "--finding_token_label_rate", "0.5", "--report_order", "findings_first")
        + ("--finding_sides", "all", "--finding_side_gate", "true"),
    ),
)


def run_candidate(candidate: Candidate, out: Path, init: Path, data: Path, settings, val: list[dict]) -> dict:
    run_dir = out / "runs" / candidate.name
    done = run_dir / "validation.json"
    if not done.is_file():
        train_run(run_dir, init, data, settings.train_sizes[0], 0, settings, candidate.overrides)
        evaluate_run(run_dir, val, data, name="validation.json")
    result = json.loads(done.read_text())
    reports = result["reports"]
    devices = CHEXPERT_LABELS.index("Support Devices")
    written = label_reports(reports)[:, devices] == 1
    shown = label_reports([rec["findings_text"] for rec in val[: len(reports)]])[:, devices] == 1
    return {
        "name": candidate.name,
        "change": candidate.change,
        "overrides": list(candidate.overrides),
        "f1_micro": result["ce"]["f1_micro"],
        "f1_macro": result["ce"]["f1_macro"],
        "per_label": {label: result["ce"]["per_label"][label]["f1"] for label in FOCUS},
        "distinct_reports": len(set(reports)) / len(reports),
        "most_common_report": Counter(reports).most_common(1)[0][1] / len(reports),
        # The share of reports with a device sentence, on the films whose reference has devices and on the others.
        "devices_written": {"with": float(written[shown].mean()), "without": float(written[~shown].mean())},
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| run | change | micro | macro | "
        + " | ".join(FOCUS)
        + " | distinct reports | device sentence (films with / without devices) |"
    )
    lines = [head, "|---" * (6 + len(FOCUS)) + "|"]
    for row in rows:
        labels = " | ".join(f"{row['per_label'][label]:.2f}" for label in FOCUS)
        lines.append(
            f"| {row['name']} | {row['change']} | {row['f1_micro']:.3f} | {row['f1_macro']:.3f} | {labels} | "
            f"{row['distinct_reports']:.0%} | {row['devices_written']['with']:.0%} / {row['devices_written']['without']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="runs folder (resumable)")
    p.add_argument("--data", required=True, help="SynthCXR folder: train split to train, validation split to score")
    p.add_argument("--init", required=True, help="the initial checkpoint every candidate starts from")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--train-studies", type=int, default=12800)
    p.add_argument("--val", type=int, default=400, help="validation studies scored")
    p.add_argument("--only", nargs="+", help="run these candidates only (names)")
    p.add_argument("--table", default="docs/results/report_recipe/tried.json")
    args = p.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    settings = replace(ReproduceSettings(), steps=args.steps, train_sizes=(args.train_studies,))
    val = read_manifest(data, "validation")[: args.val]
    rows = []
    for candidate in CANDIDATES:  # the table lists every finished candidate, those of earlier invocations too
        finished = (out / "runs" / candidate.name / "validation.json").is_file()
        if args.only and candidate.name not in args.only and not finished:
            continue
        rows.append(run_candidate(candidate, out, Path(args.init), data, settings, val))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    record = {"data": str(data), "init": str(args.init), "steps": args.steps, "validation_studies": len(val)}
    atomic_write(table, json.dumps({**record, "runs": rows}, indent=1).encode())
    atomic_write(table.with_suffix(".md"), (markdown(rows) + "\n").encode())
    for row in rows:  # each run's reports and CE beside the table, so the table can be checked without the runs
        done = out / "runs" / row["name"] / "validation.json"
        atomic_write(table.parent / f"validation_{row['name']}.json", done.read_bytes())
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
