"""Timing helpers of the performance suite: two systems measured side by side, round by round, and the machine.

This machine is shared with long CPU trainings, so an absolute time says little; what the suite reports is the
median of per-round ratios, each round timing A then B back to back (ABAB...), so both see the same load. On CPU the
clock is the thread's own CPU time (`time.thread_time`): with more runnable processes than cores, wall time mostly
measures how often the scheduler took the core away; CPU time still carries the cache and memory-bandwidth effects of
the neighbours, which is why the ratios are medians of interleaved rounds all the same. On a GPU it is wall time
(after a synchronize), since the work happens off the CPU.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def interleaved(a, b, rounds: int, inner: int = 1, warmup: int = 1, clock: str = "cpu") -> dict:
    """Time `a` and `b` alternately: `rounds` rounds of (a x inner, then b x inner), after `warmup` calls of each.

    Returns `{"a_s": median seconds per call of a, "b_s": ..., "ratio": median over rounds of b/a, ...}`.
    """
    for _ in range(warmup):
        a()
        b()
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(_timed(a, inner, CLOCKS[clock]))
        times_b.append(_timed(b, inner, CLOCKS[clock]))
    return {**summary(times_a, times_b, inner), "clock": clock}


def summary(times_a: list[float], times_b: list[float], inner: int = 1) -> dict:
    """Medians of paired timings: `ratio` is the median over rounds of b/a (so it follows the load round by round)."""
    ratios = [tb / ta for ta, tb in zip(times_a, times_b)]
    return {
        "a_s": statistics.median(times_a),
        "b_s": statistics.median(times_b),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "rounds": len(ratios),
        "calls_per_round": inner,
        "ratios": [round(r, 4) for r in ratios],
    }


def _timed(fn: Callable[[], object], inner: int, clock=time.perf_counter) -> float:
    start = clock()
    for _ in range(inner):
        fn()
    return (clock() - start) / inner


def calls_for(fn: Callable[[], object], target_s: float, most: int = 50) -> int:
    """How many calls of `fn` make one timing sample of about `target_s` (fewer timer and scheduler artefacts)."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(most, round(target_s / once)))


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB.

    Linux's VmHWM: the high-water mark of this program's own memory. `getrusage`'s ru_maxrss is not usable in a child
    process: it also keeps the parent's resident size at the fork (the copied address space, replaced by exec), so a
    child of a 800 MiB benchmark runner reports at least 800 MiB whatever it does. ru_maxrss where there is no /proc.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    """What the numbers were measured on, including the load that other processes put on it."""
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
