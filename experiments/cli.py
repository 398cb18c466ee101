"""`asarg reproduce`: the paper's experiments on SynthCXR, end to end and resumable (the grid by default; the
continued regime with `--continued`; the embedded default model with `--default-model`; issue 22's pre-registered
sequential ablation with `--ablation`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from asarg.processing.outputs import OutputError, claim_run_dir
from asarg.training.small_synth import ARMS

from .ablation import QUICK_ABLATION, REGIMES, AblationSettings, markdown, run_ablation
from .continued import continued
from .default_model import default_model, export
from .grid import reproduce
from .steps import QUICK, ReproduceSettings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="results folder; a rerun continues where the last one stopped")
    p.add_argument("--quick", action="store_true", help="toy sizes: the whole pipeline in minutes")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--train-sizes", type=int, nargs="+", help="override the training-set sizes")
    p.add_argument("--steps", type=int, help="override the optimiser steps per run")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), help="override the arms (the baseline is needed)")
    p.add_argument(
        "--default-model", action="store_true", help="instead of the grid: train and score the embedded default model"
    )
    p.add_argument("--table-only", action="store_true", help="tables from the finished runs only; train nothing")
    p.add_argument("--overwrite", action="store_true", help="use an --out that holds files of other origin")
    p.add_argument("--export", help="with --default-model: write the embedded model folder here (asarg/default_model)")
    p.add_argument(
        "--continued",
        action="store_true",
        help="after the grid's baselines: the grown-from-LLaVA regime (continued.py)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="instead of the grid: issue 22's paired sequential ablation in two tower regimes (experiments/ablation.py)",
    )
    p.add_argument(
        "--max-seeds", type=int, help="with --ablation: stop after the look at this many seeds (8: the first)"
    )
    p.add_argument("--regime", nargs="+", choices=REGIMES, help="with --ablation: only these tower regimes")
    args = p.parse_args(argv)
    try:
        identity = {"sizes": "quick" if args.quick else "full"} | ({"experiment": "ablation"} if args.ablation else {})
        claim_run_dir(args.out, command="reproduce", identity=identity, overwrite=args.overwrite)
    except OutputError as error:
        print(f"asarg reproduce: {error}", file=sys.stderr)
        return 2
    if args.ablation:
        ablation = QUICK_ABLATION if args.quick else AblationSettings()
        ablation = replace(ablation, steps=args.steps) if args.steps else ablation
        summary = run_ablation(args.out, ablation, args.max_seeds, not args.table_only, args.regime)
        print(json.dumps(summary["decisions"], indent=1))
        print(markdown(summary))
        return 0
    settings = QUICK if args.quick else ReproduceSettings()
    overrides = {"seeds": args.seeds, "train_sizes": args.train_sizes, "steps": args.steps, "arms": args.arms}
    settings = replace(settings, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v})
    if args.default_model:
        scores = default_model(args.out, settings, quick=args.quick)
        if args.export:
            print(f"embedded model written to {export(Path(args.out), Path(args.export))}")
        print(json.dumps({k: scores[k] for k in ("studies", "margin_over_best_image_blind")}, indent=1))
        return 0
    if args.continued:
        tables = continued(args.out, settings)
    else:
        tables = reproduce(args.out, settings, train=not args.table_only)
    print(tables["markdown"])
    return 0


__all__ = ["main"]
