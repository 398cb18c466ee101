"""`asarg synth` and `asarg contact-sheet`."""

from __future__ import annotations

import argparse
import json
import time


def synth_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="asarg synth", description="Generate the SynthCXR benchmark (synthcxr-v1): "
                                "images/, masks/, train/validation/test.jsonl and dataset_info.json in --out.")
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
    print(f"wrote {args.n} studies ({info['version']}, {args.size}px) to {args.out} in {dt:.1f}s "
          f"({args.n / dt:.1f} studies/s); splits {json.dumps(info['splits'])}")
    return 0


def contact_sheet_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="asarg contact-sheet", description="Write a PNG of SynthCXR films with "
                                "anatomy/finding overlays, labels and reports.")
    p.add_argument("--out", default="synthcxr_contact_sheet.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first study index")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cols", type=int, default=4)
    args = p.parse_args(argv)
    from .contact_sheet import save_contact_sheet

    path = save_contact_sheet(args.out, seed=args.seed, start=args.start, n=args.n, size=args.size, cols=args.cols)
    print(f"wrote {path}")
    return 0
