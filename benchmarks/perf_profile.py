"""torch.profiler views of the hot paths: a forward with precomputed seg inputs, generate's prefill, tracing.

For each path, the operators with the most self CPU time, and the share of the seg path's own operators (pooling,
the value check, the projector's seg columns: what ASaRG adds to LLaVA). What was found and removed is listed in
docs/results/performance.md.
"""

from __future__ import annotations

import torch
from perf_latency import LLAVA_KEYS, PRECOMPUTED, generate_kwargs
from perf_shapes import build_pair, make_inputs
from torch.profiler import ProfilerActivity, profile

# Operators only the seg path issues here (LLaVA's forward has none of them).
SEG_OPS = ("aten::aminmax", "aten::adaptive_avg_pool2d", "aten::_adaptive_avg_pool2d", "aten::stack")


def _table(prof, top: int) -> dict:
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: -e.self_cpu_time_total)
    rows = [
        {
            "op": e.key,
            "calls": e.count,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
        }
        for e in events[:top]
    ]
    seg = sum(e.self_cpu_time_total for e in events if e.key in SEG_OPS) / total
    return {"top_ops": rows, "seg_only_ops_share": seg, "aten_ops": sum(e.count for e in events)}


def _profiled(fn, repeats: int, top: int) -> dict:
    with torch.no_grad():
        fn()  # warm-up: hooks, caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                fn()
    return _table(prof, top)


def hot_paths(shape: str = "tiny", repeats: int = 10, top: int = 8) -> dict:
    llava, asarg = build_pair(shape)
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
    study = studies(8)[0]
    return _profiled(lambda: trace_report(model, processor, study.image, study.report, prompt=PROMPT), repeats, top)
