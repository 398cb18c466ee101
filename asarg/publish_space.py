"""`asarg push-space`: the Gradio Space folder (`spaces_demo/` + the asarg wheel with the default model) -> the Hub.

    asarg push-space org/asarg-demo --dry-run --out space-folder   # write the exact folder, list what would go up
    asarg push-space org/asarg-demo [--private] [--model org/asarg]

The folder is assembled by `spaces_demo/build_space.py` from this checkout (so run it from a source checkout, at
the commit you mean to publish). `--model` sets the Space variable `ASARG_MODEL`, so the Space loads a Hub model
instead of the embedded one.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def _build_space_module():
    path = CHECKOUT / "spaces_demo" / "build_space.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `asarg push-space` builds the Space from a source checkout of asarg, not from an "
            "installed wheel. Clone the repository and run it there."
        )
    spec = importlib.util.spec_from_file_location("asarg_build_space", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_space_folder(out: Path) -> Path:
    """Build the Space folder in a staging folder and move it to `out` (check `out` first: it is replaced)."""
    from asarg.processing.outputs import staged_dir

    module = _build_space_module()
    with staged_dir(Path(out), "push-space") as staging:
        module.build(staging, python=sys.executable)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    from .publish import publish_options, run_publish

    p = argparse.ArgumentParser(prog="asarg push-space", description=__doc__.split("\n\n")[0])
    p.add_argument("repo_id", help="the Space, e.g. org/asarg-demo")
    p.add_argument("--model", help="a Hub model id for the Space to load (sets the Space variable ASARG_MODEL)")
    args = publish_options(p).parse_args(argv)

    def set_model(folder: Path) -> None:
        if args.model:
            from huggingface_hub import HfApi

            HfApi(token=args.token).add_space_variable(args.repo_id, "ASARG_MODEL", args.model)

    return run_publish(
        "push-space", args.repo_id, args, build_space_folder, folder_name="space", repo_type="space", after=set_model
    )


__all__ = ["build_space_folder", "main"]
