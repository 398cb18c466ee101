"""The rest of the pipeline: the report labeler's reports/s, the seg cache's bytes per image, tracing time per report.

Labeler: Open-i's development reports when the shared folder has them (`benchmarks/quality/labeler_openi.py`), else
SynthCXR's, with the sentence cache off (every sentence parsed), CPU time of one thread. Tracing:
`asarg.evaluation.grounding.trace_report` of a SynthCXR study's report through the small-synth model (random weights,
built-in U-Net; all 59 maps ablated, batch 8), measured side by side with one teacher-forced forward of the same text.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from perf_data import PROMPT, small_synth_model, studies
from perf_timing import interleaved

OPENI = Path(__file__).resolve().parents[3] / "shared" / "data" / "openi"


def labeler_speed(max_reports: int) -> dict:
    from asarg.evaluation.report_labeler import RuleLabeler

    source, reports = "synthcxr", [study.report for study in studies(64)]
    if (OPENI / "indiana_reports.csv").is_file():
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from labeler_openi import load_openi

        source, reports = "open-i (development split)", load_openi(OPENI)[1]
    reports = reports[:max_reports]
    RuleLabeler().label("warm-up: compiles the phrase lists once")
    labeler = RuleLabeler(cache_size=0)
    start = time.thread_time()
    labeler.label_many(reports)
    seconds = time.thread_time() - start
    return {
        "source": source,
        "reports": len(reports),
        "reports_per_s": len(reports) / seconds,
        "sentence_cache": False,
    }


def seg_cache_bytes() -> dict:
    """Bytes per image of one cache entry (maps as uint8, features as fp16, pooled to the patch grid; the size depends
    on the shapes alone) at LLaVA-1.5's scale (24x24 grid, CXAS's 159 maps, 128 channels) and at the small-synth
    shape (8x8, 59 maps, 32 channels), against CXAS's 159 masks at full resolution (512x512, one byte per pixel)."""
    from asarg.processing.seg_cache import encode_entry

    rng = np.random.default_rng(0)

    def entry_bytes(classes: int, channels: int, grid: int) -> int:
        entry = {
            "seg_maps": rng.random((classes, grid, grid)).astype(np.float32),
            "seg_features": rng.normal(0, 1, (channels, grid, grid)).astype(np.float32),
        }
        return len(encode_entry(entry, {"segmenter": "0" * 64, "image": "0" * 64}))

    return {
        "llava15_scale_bytes": entry_bytes(159, 128, 24),
        "small_synth_bytes": entry_bytes(59, 32, 8),
        "full_resolution_mask_bytes": 159 * 512 * 512,
    }


def tracing_time(rounds: int) -> dict:
    from asarg.evaluation.tracing import _chat_text, trace_report

    model, processor = small_synth_model()
    model.eval()
    study = studies(8)[0]
    image = study.image
    text, _ = _chat_text(processor, PROMPT, study.report)
    inputs = processor(images=image, text=text, return_tensors="pt")

    def forward():
        with torch.no_grad():
            model(**inputs)

    def trace():
        trace_report(model, processor, image, study.report, prompt=PROMPT)

    timing = interleaved(forward, trace, rounds)
    return {
        "model": "small-synth features+maps, built-in U-Net, random weights",
        "structures": model.config.num_seg_classes,
        "report_tokens": int(inputs["input_ids"].shape[1]),
        "ms_per_report": timing["b_s"] * 1e3,
        "forwards_per_trace": timing["ratio"],
        "rounds": timing["rounds"],
    }
