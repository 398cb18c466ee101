"""The hot-path changes, before against after: LLaVA, ASaRG as of a git revision and ASaRG now, in one process.

    python benchmarks/perf_before_after.py --ref c3443f7 [--shapes tiny,small-synth] [--rounds 201]

The revision's `modeling_asarg/` is read with `git show` into a temporary package (`modeling_asarg_before`; its
imports are relative, so it runs as is), both ASaRG models are grown from the same LLaVA, and the three are timed
round by round in rotating order (thread CPU time). Prints ASaRG/LLaVA for each, forward (no cache) and greedy
generation (16 new tokens, as a time ratio: throughput is its inverse), with the issue's precomputed seg inputs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from perf_latency import LLAVA_KEYS, PRECOMPUTED, generate_kwargs  # noqa: E402
from perf_shapes import SHAPES, build_pair, make_inputs, seg_overrides  # noqa: E402
from perf_timing import calls_for  # noqa: E402

FILES = ("__init__.py", "configuration_asarg.py", "modeling_asarg.py", "processing_asarg.py")


def load_revision(ref: str, root: Path):
    package = root / "modeling_asarg_before"
    package.mkdir()
    for name in FILES:
        text = subprocess.run(["git", "show", f"{ref}:modeling_asarg/{name}"], cwd=HERE.parent, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
        (package / name).write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module("modeling_asarg_before")


def three_way(calls: dict, rounds: int) -> dict:
    """Median over rounds of each system's time over LLaVA's; the order rotates every round."""
    names = list(calls)
    inner = calls_for(calls["llava"], 0.02)
    for call in calls.values():
        call()
    times = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % 3 :] + names[: index % 3]:
            start = time.thread_time()
            for _ in range(inner):
                calls[name]()
            times[name].append((time.thread_time() - start) / inner)
    ratio = {name: statistics.median(a / b for a, b in zip(times[name], times["llava"])) for name in names[1:]}
    return {"llava_ms": statistics.median(times["llava"]) * 1e3, **ratio, "rounds": rounds, "calls_per_round": inner}


def compare(before, shape: str, batch: int, rounds: int) -> dict:
    llava, after = build_pair(shape)
    old = before.AsargForConditionalGeneration.from_llava(llava, **seg_overrides(SHAPES[shape])).eval()
    inputs = make_inputs(shape, llava.config, batch)
    plain, seg = {k: inputs[k] for k in LLAVA_KEYS}, {k: inputs[k] for k in PRECOMPUTED}
    options = generate_kwargs(llava, 16)
    with torch.no_grad():
        forward = three_way(
            {"llava": lambda: llava(**plain, use_cache=False), "before": lambda: old(**plain, **seg, use_cache=False),
             "after": lambda: after(**plain, **seg, use_cache=False)}, rounds)  # fmt: skip
        generate = three_way(
            {"llava": lambda: llava.generate(**plain, **options), "before": lambda: old.generate(**plain, **seg, **options),
             "after": lambda: after.generate(**plain, **seg, **options)}, max(11, rounds // 4))  # fmt: skip
    return {"shape": shape, "batch": batch, "forward": forward, "generate_time": generate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, help="git revision of the 'before' modeling_asarg/")
    parser.add_argument("--shapes", default="tiny,small-synth")
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        before = load_revision(args.ref, Path(root))
        rows = [compare(before, shape, batch, args.rounds) for shape in args.shapes.split(",") for batch in (1, 8)]
    for row in rows:
        f, g = row["forward"], row["generate_time"]
        print(f"{row['shape']:12s} b{row['batch']}  forward before {f['before']:.3f}x after {f['after']:.3f}x  "
              f"generation throughput before {1 / g['before']:.3f}x after {1 / g['after']:.3f}x")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"ref": args.ref, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
