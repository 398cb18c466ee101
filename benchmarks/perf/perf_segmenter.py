"""What the segmenter costs: per image (built-in U-Net, CXAS-compatible ResNet-50 U-Net at 512x512, random weights),
and per training step, online (the frozen segmenter runs in every step) against the seg cache (it ran once per image,
`SegCache.add_to_dataset`; `AsargSegCacheCollator` reads the pooled entries), plus the cache's bytes per image.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from perf_data import SPECIALIST, rows, small_synth_model
from perf_shapes import build_pair, make_inputs
from perf_timing import interleaved

from modeling_asarg import build_segmenter, cxas_segmenter_config, default_segmenter_config


def _segment(segmenter, side: int, device, dtype):
    pixels = torch.randn(1, 3, side, side, device=device, dtype=dtype)

    def run():
        with torch.no_grad():
            segmenter(pixels)
        _sync(device)

    return run


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def segmenter_cost(rounds: int, reference: str, cxas: bool = True, device="cpu", dtype=torch.float32) -> list[dict]:
    """ms per image (batch 1) of the built-in U-Net (the small-synth specialist) and of CXAS, each measured side by
    side with one LLaVA forward (batch 1) of the `reference` shape; `ratio` is segmenter time over that forward."""
    llava, _ = build_pair(reference, device=device, dtype=dtype)
    inputs = make_inputs(reference, llava.config, 1, device=device, dtype=dtype)
    plain = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    clock = "wall" if torch.device(device).type == "cuda" else "cpu"

    def forward():
        with torch.no_grad():
            llava(**plain, use_cache=False)
        _sync(device)

    nets = [("unet (small-synth specialist)", default_segmenter_config(**SPECIALIST), SPECIALIST["image_size"])]
    nets += [("cxas_unet_resnet50", cxas_segmenter_config(), 512)] if cxas else []
    results = []
    for name, settings, side in nets:
        segmenter = build_segmenter(settings).to(device=device, dtype=dtype).eval()
        timing = interleaved(forward, _segment(segmenter, side, device, dtype), rounds, clock=clock)
        results.append(_row(name, side, timing["b_s"], timing["ratio"], f"{reference} LLaVA forward"))
    return results


def _row(name: str, side: int, seconds: float, ratio: float, reference: str) -> dict:
    return {
        "segmenter": name,
        "input": f"{side}x{side}",
        "ms_per_image": seconds * 1e3,
        "images_per_s": 1 / seconds,
        "ratio_to": reference,
        "ratio": ratio,
    }


def training_cache_vs_online(steps: int, batch_size: int = 8, n_rows: int = 32) -> dict:
    """Training steps (collate, forward, backward, AdamW step) of the small-synth recipe's model, alternating a batch
    collated online (TRL's collator: `seg_pixel_values`, the segmenter runs) and the same batch from the seg cache."""
    import datasets
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from asarg.processing.seg_cache import SegCache
    from asarg.processing.seg_collator import AsargSegCacheCollator

    model, processor = small_synth_model()
    data = rows(n_rows)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = SegCache(cache_dir, model, processor)
        start = _clock()
        keyed = list(cache.add_to_dataset(datasets.Dataset.from_list(data), batch_size=batch_size))
        fill_s = (_clock() - start) / n_rows
        entry_bytes = int(np.median([cache.entry_bytes(row["seg_cache_keys"][0]) for row in keyed]))
        collators = (
            DataCollatorForVisionLanguageModeling(processor),
            AsargSegCacheCollator(processor, seg_cache=cache),
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batches = [range(i, i + batch_size) for i in range(0, n_rows - batch_size + 1, batch_size)]
        step = {"n": 0}

        def train_step(collator, source):
            rows_of_step = [dict(source[i]) for i in batches[step["n"] % len(batches)]]
            loss = model(**collator(rows_of_step)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def online():
            train_step(collators[0], data)

        def cached():
            train_step(collators[1], keyed)
            step["n"] += 1  # the next round trains on the next batch, in both settings

        timing = interleaved(online, cached, steps)
    return {
        "model": "small-synth features+maps, built-in U-Net (frozen), vision tower frozen",
        "batch_size": batch_size,
        "online_steps_per_s": 1 / timing["a_s"],
        "cache_steps_per_s": 1 / timing["b_s"],
        "cache_speedup": 1 / timing["ratio"],
        "rounds": timing["rounds"],
        "cache_fill_ms_per_image": fill_s * 1e3,
        "cache_entry_bytes": entry_bytes,
    }


def _clock() -> float:
    import time

    return time.thread_time()
