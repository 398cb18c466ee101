"""`asarg sft --config RECIPE.yaml [--key value ...]`: run a TRL SFT recipe (`asarg.training.sft_asarg`) from the
command line of the installed package, with the other commands' error convention (a user error is one line, exit 2).

    asarg sft --config training/recipes/synthcxr_tiny_cpu.yaml --dataset_name data/synthcxr --output_dir runs/tiny

Every recipe key can be given on the command line after the config; `asarg sft --help` lists them. For several
processes use the script itself under torchrun / accelerate launch (`python -m asarg.training.sft_asarg`).
"""

from __future__ import annotations

import sys

from asarg.training.sft_asarg import main as run_recipe
from asarg.training.sft_asarg import make_parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv and not any(a in ("-h", "--help") for a in argv):
        print("asarg sft: give a recipe with --config RECIPE.yaml (see training/recipes/)", file=sys.stderr)
        return 2
    try:
        parser = make_parser()
        parser.prog = "asarg sft"
        parsed = parser.parse_args_and_config(args=argv)
        trainer = run_recipe(*parsed)
    except (ValueError, FileNotFoundError) as error:  # an unknown key, a bad value, a missing dataset
        print(f"asarg sft: {error}", file=sys.stderr)
        return 2
    trainer.end()
    print(f"asarg sft: model written to {trainer.args.output_dir}")
    return 0


__all__ = ["main"]
