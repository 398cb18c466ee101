"""`asarg finetune`: the everyday path — fine-tune an ASaRG model on a folder of your own images and reports.

    asarg finetune my-data/ --out runs/mine                       # image folder: name.png + name.txt, on CPU
    asarg finetune cases.jsonl --format jsonl --out runs/mine --lora
    asarg finetune my-data/ --out runs/mine --model org/asarg -- --max_steps 1000 --learning_rate 1e-4

A thin layer over the TRL recipe `training/recipes/finetune_cpu.yaml` (run by `asarg.training.sft_asarg`): this
command fills in the data, the model (default: the embedded default model) and the output folder; everything after
`--` overrides recipe keys. The output folder loads like any checkpoint (`asarg generate IMG --model runs/mine`). A
rerun into the same `--out` continues from its newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPE = Path(__file__).with_name("recipes") / "finetune_cpu.yaml"


def recipe_args(args: argparse.Namespace, model: str, extra: list[str]) -> list[str]:
    """The command line `asarg.training.sft_asarg` is given."""
    argv = ["--config", str(RECIPE), "--dataset_name", args.data, "--dataset_format", args.format]
    argv += ["--model_name_or_path", model, "--output_dir", args.out]
    if args.steps is not None:
        argv += ["--max_steps", str(args.steps)]
    if args.lora:
        argv += ["--use_peft", "true"]
    from .checkpoints import has_complete_checkpoint

    if has_complete_checkpoint(args.out):
        argv += ["--resume_from_checkpoint", "true"]
    return argv + extra


def arg_parser() -> argparse.ArgumentParser:
    """The options before `--` (after it: recipe keys, passed to the TRL recipe as they are)."""
    p = argparse.ArgumentParser(prog="asarg finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="an image folder (name.png + name.txt) or a JSONL manifest's folder/file")
    p.add_argument("--format", default="image-folder", help="a loader: image-folder, jsonl, r2gen, mimic-cxr-jpg")
    p.add_argument("--out", required=True, help="output folder (a rerun continues from its last checkpoint)")
    p.add_argument("--model", help="checkpoint folder or Hub id to start from (default: the embedded model)")
    p.add_argument("--steps", type=int, help="optimiser steps (recipe default: 300)")
    p.add_argument("--lora", action="store_true", help="LoRA on the language model instead of full fine-tuning")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = arg_parser().parse_args(argv)

    from asarg.models import resolve_model

    from .sft_asarg import main as sft_main
    from .sft_asarg import make_parser

    try:
        model = resolve_model(args.model)
        parsed = make_parser().parse_args_and_config(recipe_args(args, model, extra))
    except (FileNotFoundError, ValueError) as error:
        print(f"asarg finetune: {error}", file=sys.stderr)
        return 2
    sft_main(*parsed).end()
    print(f"asarg finetune: model written to {args.out} (try: asarg generate IMAGE --model {args.out})")
    return 0


__all__ = ["arg_parser", "main", "recipe_args"]
