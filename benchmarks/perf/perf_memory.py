"""Peak memory (RSS) of inference and of one training step, ASaRG against LLaVA, each in a fresh process.

    python benchmarks/perf/perf_memory.py --shape small-synth --system asarg --task train   # prints one JSON line

A process's peak RSS (`getrusage` ru_maxrss) only grows, so every measurement gets its own interpreter. Inference:
greedy generation, batch 8, 16 new tokens (batch 1, 4 tokens at the smol shape); training: one forward, backward and
AdamW step on batch 8 (the vision tower frozen, as in the recipes). ASaRG gets precomputed seg inputs, or
`seg_pixel_values` for its built-in segmenter with `--seg segmenter`. Reported: RSS once the model and inputs are
built and the process's peak, in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(shape: str, system: str, task: str, seg="precomputed", device="cpu", dtype="float32", timeout=900) -> dict:
    """Run one measurement in a fresh interpreter (one thread) and return its JSON line."""
    command = [sys.executable, str(HERE / "perf_memory.py"), "--shape", shape, "--system", system, "--task", task]
    command += ["--device", device, "--dtype", dtype]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(command + ["--seg", seg], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement {shape}/{system}/{task} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run(args) -> dict:
    import torch
    from perf_latency import LLAVA_KEYS, seg_keys
    from perf_shapes import build_pair, make_inputs
    from perf_timing import peak_rss_mib

    torch.set_num_threads(1)
    segmenter, cuda, dtype = args.seg == "segmenter", args.device == "cuda", getattr(torch, args.dtype)
    llava, asarg = build_pair(
        args.shape, segmenter=segmenter and args.system == "asarg", device=args.device, dtype=dtype
    )
    model = asarg if args.system == "asarg" else llava
    del llava, asarg  # the ASaRG model holds the LLaVA weights it was grown from
    batch = 1 if args.shape == "smol" and not cuda else 8
    inputs = make_inputs(args.shape, model.config, batch, device=args.device, dtype=dtype)
    keys = (*LLAVA_KEYS, *(seg_keys(segmenter) if args.system == "asarg" else ()))
    inputs = {key: inputs[key] for key in keys}
    seg_bytes = sum(value.numel() * value.element_size() for key, value in inputs.items() if key.startswith("seg_"))
    built = {"rss_built_mib": _current_rss_mib(), "seg_inputs_mib": seg_bytes / 2**20}
    if cuda:
        built["cuda_built_mib"] = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    _task(model, inputs, args.task, 4 if args.shape == "smol" and not cuda else 16)
    result = {"shape": args.shape, "system": args.system, "task": args.task, "seg": args.seg, "batch": batch, **built}
    result["peak_rss_mib"] = peak_rss_mib()
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _task(model, inputs: dict, task: str, new_tokens: int) -> None:
    import torch
    from perf_latency import generate_kwargs

    if task == "inference":
        with torch.no_grad():
            model.generate(**inputs, **generate_kwargs(model, new_tokens))
        return
    model.train()
    model.model.vision_tower.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="small-synth")
    parser.add_argument("--system", choices=["llava", "asarg"], required=True)
    parser.add_argument("--task", choices=["inference", "train"], required=True)
    parser.add_argument("--seg", choices=["precomputed", "segmenter"], default="precomputed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    sys.path.insert(0, str(HERE))
    print(json.dumps(_run(parser.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
