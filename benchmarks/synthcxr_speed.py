"""SynthCXR generation speed on one core: studies/s for (a) generation in memory (image + 59 anatomy masks +
finding masks + labels + report) and (b) end to end, also encoding and writing the PNG and the mask .npz.

    .venv/bin/python benchmarks/synthcxr_speed.py --n 300 --size 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from processing.synthcxr.dataset import write_study
    from processing.synthcxr.generator import generate_study

    generate_study(args.seed, 10**6, args.size)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    for i in range(args.n):
        generate_study(args.seed, i, args.size)
    gen = args.n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "images").mkdir()
        (out / "masks").mkdir()
        t0 = time.perf_counter()
        for i in range(args.n):
            write_study(generate_study(args.seed, i, args.size), out)
        e2e = args.n / (time.perf_counter() - t0)
    load = os.getloadavg()[0]
    print(
        f"size {args.size}px, n={args.n}, one process: generate {gen:.1f} studies/s, "
        f"generate+write {e2e:.1f} studies/s (1-min load average {load:.2f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
