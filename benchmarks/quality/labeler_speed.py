"""Throughput of the rule-based labeler in one process on one core (a benchmark, not a test).

    python benchmarks/quality/labeler_speed.py [--data ../shared/data/openi] [--repeats 3]

Labels the 3,080 Open-i development reports (findings + impression) and prints reports per second of process CPU
time, best of `--repeats`, for a cold labeler (sentence cache off: every sentence is parsed) and for the default
labeler, whose sentence cache starts empty and fills during the run (report sets repeat sentences). The target
applies to the cold figure: the cache only helps as far as a report set repeats sentences. Pin it to one core with
`taskset -c 0` for a strict single-core figure; the load average is printed because other processes on the machine
(or a shared VM host) move the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from asarg.evaluation.report_labeler import RuleLabeler

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # the sibling benchmark script

from labeler_openi import DEFAULT_DATA, load_openi  # noqa: E402

TARGET = 2000


def reports_per_second(reports: list[str], cache_size: int, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        labeler = RuleLabeler(cache_size=cache_size)  # a fresh cache each repeat
        t0 = time.process_time()
        labeler.label_many(reports)
        best = max(best, len(reports) / (time.process_time() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    _, reports, _ = load_openi(args.data)
    RuleLabeler().label("warm-up: compiles the phrase lists once")
    cold = reports_per_second(reports, cache_size=0, repeats=args.repeats)
    cached = reports_per_second(reports, cache_size=100_000, repeats=args.repeats)
    chars = sum(map(len, reports)) / len(reports)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"{len(reports)} Open-i reports, {chars:.0f} characters on average; load average {load}")
    print(f"no sentence cache (cold):     {cold:8.0f} reports/s   (target >= {TARGET})")
    print(f"sentence cache (empty start): {cached:8.0f} reports/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
