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
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds another run")
    return p


def fingerprint(path: str | Path) -> str:
    """A cheap identity of a data file or folder, or of a model folder: the sha256 of its files' relative names and
    sizes (a model folder's checksums.sha256 when it has one). Equal data gives equal fingerprints; adding, removing
    or resizing a file changes it."""
    import hashlib

    from asarg.processing.checkpoints import MANIFEST

    root = Path(path)
    if (root / MANIFEST).is_file():
        return hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()[:16]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{file.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def run_identity(args: argparse.Namespace, model: str) -> dict:
    """What a resumed run must share with the run in --out: the data, its format and the model it started from."""
    data, source = Path(args.data).resolve(), Path(model).expanduser()
    return {
        "data": str(data),
        "data_fingerprint": fingerprint(data) if data.exists() else None,
        "format": args.format,
        "model": str(source.resolve()) if source.is_dir() else model,
        "model_fingerprint": fingerprint(source) if source.is_dir() else None,
        "lora": bool(args.lora),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = arg_parser().parse_args(argv)

    from asarg.processing.models import resolve_model
    from asarg.processing.outputs import claim_run_dir

    from .sft_asarg import main as sft_main
    from .sft_asarg import make_parser

    try:
        model = resolve_model(args.model)
        identity = run_identity(args, model)
        claim_run_dir(args.out, [args.data, model], command="finetune", identity=identity, overwrite=args.overwrite)
        parsed = make_parser().parse_args_and_config(recipe_args(args, model, extra))
    except (FileNotFoundError, ValueError) as error:
        print(f"asarg finetune: {error}", file=sys.stderr)
        return 2
    try:
        sft_main(*parsed).end()
    except ValueError as error:  # a recipe value or a dataset it cannot use: named, no traceback
        print(f"asarg finetune: {error}", file=sys.stderr)
        return 2
    print(f"asarg finetune: model written to {args.out} (try: asarg generate IMAGE --model {args.out})")
    return 0


__all__ = ["arg_parser", "main", "recipe_args"]
