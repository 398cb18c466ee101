"""`asarg synth`: write a SynthCXR dataset to a folder."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..outputs import check_output_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asarg synth",
        description="Generate the SynthCXR benchmark (synthcxr-v1): "
        "images/, masks/, train/validation/test.jsonl and dataset_info.json in --out. Rerunning an interrupted "
        "command finishes it (the output is deterministic); a folder holding another generation is refused.",
    )
    p.add_argument("--n", type=int, required=True, help="number of studies (split 80/10/10 by index)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical for any value)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that holds files of other origin")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .dataset import MARKER, OUTPUTS, existing_generation, write_dataset

    t0 = time.perf_counter()
    try:
        owned = [MARKER, *OUTPUTS]  # SynthCXR's own files: `write_dataset` says whether they can be finished
        out = check_output_dir(args.out, command="synth", owned=owned, overwrite=args.overwrite)
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: give 1 or more processes")
        held = existing_generation(out) if out.is_dir() else None
        if held and not held["complete"]:
            print(f"{out}: finishing an interrupted generation (regenerating; the output is identical)")
        info = write_dataset(out, args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True)
    except ValueError as err:
        print(f"asarg synth: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, no permission: the marker stays, so the folder reads as incomplete
        print(
            f"\nasarg synth: cannot write to {out}: {err}. Free the space or fix the permission, then rerun the "
            "same command to finish it",
            file=sys.stderr,
        )
        return 1
    dt = time.perf_counter() - t0
    print(
        f"wrote {args.n} studies ({info['version']}, {args.size}px) to {args.out} in {dt:.1f}s "
        f"({args.n / dt:.1f} studies/s); splits {json.dumps(info['splits'])}"
    )
    return 0
