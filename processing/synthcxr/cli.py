"""`asarg synth`: write a SynthCXR dataset to a folder."""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="asarg synth",
        description="Generate the SynthCXR benchmark (synthcxr-v1): "
        "images/, masks/, train/validation/test.jsonl and dataset_info.json in --out.",
    )
    p.add_argument("--n", type=int, required=True, help="number of studies (split 80/10/10 by index)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical for any value)")
    args = p.parse_args(argv)
    from .dataset import write_dataset

    t0 = time.perf_counter()
    info = write_dataset(args.out, args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True)
    dt = time.perf_counter() - t0
    print(
        f"wrote {args.n} studies ({info['version']}, {args.size}px) to {args.out} in {dt:.1f}s "
        f"({args.n / dt:.1f} studies/s); splits {json.dumps(info['splits'])}"
    )
    return 0
