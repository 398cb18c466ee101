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
import tempfile
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
    return _build_space_module().build(Path(out), python=sys.executable)


def main(argv: list[str] | None = None) -> int:
    from .publish import listing, upload

    p = argparse.ArgumentParser(prog="asarg push-space", description=__doc__.split("\n\n")[0])
    p.add_argument("repo_id", help="the Space, e.g. org/asarg-demo")
    p.add_argument("--dry-run", action="store_true", help="write the folder and list it; upload nothing")
    p.add_argument("--out", help="where the Space folder is written (default: a temporary folder)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--model", help="a Hub model id for the Space to load (sets the Space variable ASARG_MODEL)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="asarg-space-")) / "space"
    try:
        folder = build_space_folder(out)
    except (OSError, SystemExit) as error:  # build_space reports a wheel/requirements mismatch as SystemExit
        print(f"asarg push-space: {error}", file=sys.stderr)
        return 2
    print(f"Space folder for {args.repo_id}: {folder}")
    print("\n".join(listing(folder)))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    print(upload(folder, args.repo_id, args.private, token=args.token, repo_type="space"))
    if args.model:
        from huggingface_hub import HfApi

        HfApi(token=args.token).add_space_variable(args.repo_id, "ASARG_MODEL", args.model)
    return 0


__all__ = ["build_space_folder", "main"]
