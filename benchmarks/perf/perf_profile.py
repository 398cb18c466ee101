"""torch.profiler views of the hot paths: a forward with precomputed seg inputs, generate's prefill, tracing.

For each path: the operators with the most self CPU time, aten operators per call, and the share of the time spent
inside ASaRG's seg path (`AsargModel.get_seg_tokens`: pooling and the value check; the profiled model's method is
wrapped in a `record_function` scope for the purpose). What was found and removed is listed in
docs/results/performance.md.
"""

from __future__ import annotations

import time

import torch
from perf_latency import LLAVA_KEYS, PRECOMPUTED, generate_kwargs
from perf_shapes import build_pair, make_inputs
from torch.profiler import ProfilerActivity, profile, record_function

SEG_SCOPE = "asarg::get_seg_tokens"


def _table(prof, top: int, calls: int, seconds: float) -> dict:
    events = prof.key_averages()
    aten = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in aten) or 1.0
    rows = [
        {
            "op": e.key,
            "calls": e.count,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
        }
        for e in aten[:top]
    ]
    seg = sum(e.cpu_time_total for e in events if e.key == SEG_SCOPE)
    return {
        "top_ops": rows,
        "aten_ops_per_call": sum(e.count for e in aten) / calls,
        "seg_path_share": seg / (seconds * 1e6),
        "calls": calls,
    }


def _profiled(fn, repeats: int, top: int) -> dict:
    with torch.no_grad():
        fn()  # warm-up: hooks, caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            seconds = time.perf_counter() - start
    return _table(prof, top, repeats, seconds)


def _scoped(model) -> None:
    """Wrap this model's `get_seg_tokens` in a profiler scope (the instance only)."""
    method = model.model.get_seg_tokens

    def get_seg_tokens(*args, **kwargs):
        with record_function(SEG_SCOPE):
            return method(*args, **kwargs)

    model.model.get_seg_tokens = get_seg_tokens


def hot_paths(shape: str = "tiny", repeats: int = 10, top: int = 8) -> dict:
    llava, asarg = build_pair(shape)
    _scoped(asarg)
    inputs = make_inputs(shape, llava.config, 1)
    plain = {k: inputs[k] for k in LLAVA_KEYS}
    seg = {k: inputs[k] for k in PRECOMPUTED}
    prefill = {**generate_kwargs(asarg, 1), "min_new_tokens": 1}
    results = {
        "shape": shape,
        "forward_llava": _profiled(lambda: llava(**plain, use_cache=False), repeats, top),
        "forward_asarg": _profiled(lambda: asarg(**plain, **seg, use_cache=False), repeats, top),
        "prefill_asarg": _profiled(lambda: asarg.generate(**plain, **seg, **prefill), repeats, top),
    }
    results["tracing_small_synth"] = _tracing(max(1, repeats // 5), top)
    return results


def _tracing(repeats: int, top: int) -> dict:
    from perf_data import PROMPT, small_synth_model, studies

    from asarg.evaluation.grounding import trace_report

    model, processor = small_synth_model()
    model.eval()
    _scoped(model)
    study = studies(8)[0]
    return _profiled(lambda: trace_report(model, processor, study.image, study.report, prompt=PROMPT), repeats, top)
