"""Forward latency and greedy generation throughput, ASaRG against the LLaVA it was grown from (same weights).

Two settings: seg inputs precomputed (`seg_maps`, `seg_features`: what the seg cache or a separate segmentation
service gives) and the built-in segmenter in the loop (`seg_pixel_values`; a forward hook checks that it runs exactly
once per `generate` call). LLaVA gets the same prompt and image without seg inputs. Ratios are ASaRG over LLaVA:
forward time (lower is better) and generated tokens per second (higher is better).
"""

from __future__ import annotations

import statistics

import torch
from perf_shapes import build_pair, make_inputs
from perf_timing import calls_for, interleaved

LLAVA_KEYS = ("input_ids", "attention_mask", "pixel_values")
PRECOMPUTED = ("seg_maps", "seg_features")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _clock(device) -> str:
    return "wall" if torch.device(device).type == "cuda" else "cpu"  # see perf_timing


def seg_keys(segmenter: bool) -> tuple[str, ...]:
    return ("seg_pixel_values",) if segmenter else PRECOMPUTED


def forward_ratio(llava, asarg, inputs: dict, segmenter: bool, rounds: int, fresh=False, target_s=0.05) -> dict:
    """One teacher-forced forward (no cache), as in training, tracing and scoring.

    The same input tensors every call, as usual for a benchmark, except with `fresh`: then consecutive calls
    alternate between two copies of every input, for both models, so that ASaRG checks the range of every maps tensor
    it gets (it skips that pass for the very tensor it has just checked; see `AsargModel._check_seg_values`)."""
    copies = [inputs, {k: v.clone() for k, v in inputs.items()}] if fresh else [inputs]
    plains = [{k: c[k] for k in LLAVA_KEYS} for c in copies]
    segs = [{k: c[k] for k in seg_keys(segmenter)} for c in copies]
    device, calls = inputs["input_ids"].device, {"llava": 0, "asarg": 0}

    def run_llava():
        calls["llava"] += 1
        llava(**plains[calls["llava"] % len(copies)], use_cache=False)
        _sync(device)

    def run_asarg():
        calls["asarg"] += 1
        index = calls["asarg"] % len(copies)
        asarg(**plains[index], **segs[index], use_cache=False)
        _sync(device)

    with torch.no_grad():
        inner = calls_for(run_llava, target_s)
        timing = interleaved(run_llava, run_asarg, rounds, inner, clock=_clock(device))
    return {"llava_ms": timing["a_s"] * 1e3, "asarg_ms": timing["b_s"] * 1e3, **_ratios(timing)}


def _ratios(timing: dict) -> dict:
    return {k: timing[k] for k in ("ratio", "ratio_min", "ratio_max", "rounds", "calls_per_round", "ratios")}


def generate_kwargs(model, new_tokens: int) -> dict:
    # min_new_tokens: random weights may emit EOS at any step; both models must produce the same number of tokens.
    pad = model.config.text_config.pad_token_id
    return {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": pad or 0}


def generate_ratio(llava, asarg, inputs: dict, segmenter: bool, rounds: int, new_tokens: int) -> dict:
    """Greedy generation of `new_tokens` per row (prefill included): tokens/s of each and ASaRG/LLaVA throughput."""
    plain = {k: inputs[k] for k in LLAVA_KEYS}
    seg = {k: inputs[k] for k in seg_keys(segmenter)}
    device, batch = inputs["input_ids"].device, inputs["input_ids"].shape[0]
    options = generate_kwargs(llava, new_tokens)
    outputs = {}

    def run_llava():
        outputs["llava"] = llava.generate(**plain, **options)
        _sync(device)

    def run_asarg():
        outputs["asarg"] = asarg.generate(**plain, **seg, **options)
        _sync(device)

    timing = interleaved(run_llava, run_asarg, rounds, clock=_clock(device))
    tokens = batch * new_tokens
    throughput = [1 / r for r in timing["ratios"]]  # per round: LLaVA time / ASaRG time
    return {
        "llava_tokens_per_s": tokens / timing["a_s"],
        "asarg_tokens_per_s": tokens / timing["b_s"],
        "throughput_ratio": statistics.median(throughput),
        "throughput_ratio_min": min(throughput),
        "rounds": rounds,
        "new_tokens": new_tokens,
        # seg_linear starts at zero, so ASaRG grown from LLaVA must write exactly LLaVA's tokens.
        "same_tokens": bool(torch.equal(outputs["llava"], outputs["asarg"])),
    }


def segmenter_runs_per_generate(asarg, inputs: dict, new_tokens: int) -> int:
    """How many times the built-in segmenter ran during one `generate` call (a forward hook counts)."""
    calls = []
    handle = asarg.model.segmenter.register_forward_hook(lambda *_: calls.append(1))
    try:
        plain = {k: inputs[k] for k in LLAVA_KEYS}
        asarg.generate(**plain, seg_pixel_values=inputs["seg_pixel_values"], **generate_kwargs(asarg, new_tokens))
    finally:
        handle.remove()
    return len(calls)


SETTINGS = {  # seg setting -> (built-in segmenter in the loop, seg inputs on the patch grid)
    "precomputed": (False, False),
    "precomputed-grid": (False, True),
    "segmenter": (True, False),
}


def latency(shape: str, batches, rounds: int, new_tokens: int, seg: str, forward=True, device="cpu", dtype=None):
    """Rows of the latency table for one shape and one seg setting: `precomputed` (maps 128x128, features 64x64),
    `precomputed-grid` (both already on the patch grid, as the seg cache gives them) or `segmenter` (in the loop)."""
    segmenter, grid = SETTINGS[seg]
    dtype = dtype or torch.float32
    llava, asarg = build_pair(shape, segmenter=segmenter, device=device, dtype=dtype)
    rows = []
    for batch in batches:
        inputs = make_inputs(shape, llava.config, batch, device=device, dtype=dtype, grid=grid)
        row = {"shape": shape, "batch": batch, "seg": seg}
        if forward:
            row["forward"] = forward_ratio(llava, asarg, inputs, segmenter, rounds)
        if forward and seg == "precomputed":
            row["forward_fresh_inputs"] = forward_ratio(llava, asarg, inputs, segmenter, rounds, fresh=True)
        row["generate"] = generate_ratio(llava, asarg, inputs, segmenter, rounds, new_tokens)
        if segmenter:
            runs = segmenter_runs_per_generate(asarg, inputs, new_tokens)
            if runs != 1:
                raise AssertionError(f"the segmenter ran {runs} times in one generate call; it must run once")
            row["segmenter_runs_per_generate"] = runs
        rows.append(row)
    return rows
