"""SynthCXR generation speed on one core: studies/s for (a) generation in memory (image + 59 anatomy masks +
finding masks + labels + report) and (b) end to end as `asarg synth --workers 1` runs it (`write_dataset`): also
encoding and writing the PNG and the mask .npz of every study (atomic writes with fsync, on a background thread
that waits for the disk while the next study is generated) and the manifests. (c) is (b) with every write done
in line, one study after another (`write_study` without a writer), for reference.

    taskset -c 1 .venv/bin/python benchmarks/quality/synthcxr_speed.py --n 300 --size 256
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
    from asarg.processing.synthcxr.dataset import write_dataset, write_study
    from asarg.processing.synthcxr.generator import generate_study

    generate_study(args.seed, 10**6, args.size)  # warm-up (imports, caches)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for i in range(args.n):
        generate_study(args.seed, i, args.size)
    gen = args.n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(Path(tmp) / "synth", args.n, seed=args.seed, size=args.size)
        e2e = args.n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "images").mkdir()
        (out / "masks").mkdir()
        t0 = time.perf_counter()
        for i in range(args.n):
            write_study(generate_study(args.seed, i, args.size), out)
        inline = args.n / (time.perf_counter() - t0)
    load1 = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"size {args.size}px, n={args.n}, one process on {cpus} allowed core(s): generate {gen:.1f} studies/s, "
        f"generate+write (write_dataset) {e2e:.1f} studies/s, generate+write in line (write_study) {inline:.1f} "
        f"studies/s (1-min load average {load0:.2f} before, {load1:.2f} after, on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
