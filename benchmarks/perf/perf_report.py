"""The Markdown tables of a performance report (the JSON that benchmarks/perf/run.py writes)."""

from __future__ import annotations


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _x(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def _millions(n: int) -> str:
    return f"{n / 1e6:,.2f} M" if n >= 1e6 else f"{n / 1e3:,.1f} k"


def markdown(report: dict) -> str:
    sections = report["sections"]
    machine = report["machine"]
    parts = [
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']}, "
        f"transformers {machine['transformers']}, {machine['torch_threads']} thread(s); device {report['device']}"
        f" ({machine.get('cuda') or 'no GPU'}), {report['dtype']}; load average {machine['load_average']} at the "
        f"start, {machine.get('load_average_end')} at the end; {report.get('duration_s')} s. "
        f"Command: `{report['command']}`."
    ]
    for name, render in RENDERERS.items():
        if name in sections:
            parts.append(render(sections[name]))
    for name, error in report.get("errors", {}).items():
        parts.append(f"**{name} failed**: `{error.splitlines()[-1]}`")
    return "\n\n".join(parts)


def _parameters(rows: list[dict]) -> str:
    body = []
    for row in rows:
        arms = row["arms"]
        added = [
            f"+{arms[a]['added']:,} ({arms[a]['added_percent']:.3f} %)" for a in ("features", "maps", "features+maps")
        ]
        segmenter = f"{_millions(row['segmenter']['params'])} ({row['segmenter']['architecture']})"
        body.append([row["shape"], _millions(row["llava_params"]), *added, segmenter])
    header = ["shape", "LLaVA params", "+ features", "+ maps", "+ both", "built-in segmenter (frozen, optional)"]
    return "**Parameters added per arm** (seg columns of the projector)\n\n" + _table(header, body)


def _latency(rows: list[dict]) -> str:
    body = []
    for row in rows:
        forward, generate = row.get("forward"), row["generate"]
        body.append(
            [
                row["shape"],
                row["batch"],
                row["seg"],
                _x(forward["ratio"]) if forward else "—",
                _x(row["forward_fresh_inputs"]["ratio"]) if "forward_fresh_inputs" in row else "—",
                f"{forward['llava_ms']:.1f}" if forward else "—",
                _x(generate["throughput_ratio"]),
                f"{generate['llava_tokens_per_s']:.1f}",
                "yes" if generate["same_tokens"] else "NO",
                row.get("segmenter_runs_per_generate", "—"),
            ]
        )
    header = ["shape", "batch", "seg inputs", "forward ASaRG/LLaVA (≤ 1 is faster)", "same, new tensors every call",
              "LLaVA forward ms",
              "generation throughput ASaRG/LLaVA (≥ 1 is faster)", "LLaVA tokens/s", "same tokens",
              "segmenter runs per generate"]  # fmt: skip
    return "**Forward latency and greedy generation** (medians of interleaved rounds)\n\n" + _table(header, body)


def _segmenter(section: dict) -> str:
    body = [
        [
            r["segmenter"],
            r["input"],
            f"{r['ms_per_image']:.1f}",
            f"{r['images_per_s']:.2f}",
            f"{r['ratio']:.2f}× {r['ratio_to']}",
        ]
        for r in section["per_image"]
    ]
    text = "**Segmenter cost per image** (batch 1, random weights)\n\n"
    text += _table(["segmenter", "input", "ms per image", "images/s", "relative cost"], body)
    training = section.get("training")
    if training:
        row = [
            f"{training['online_steps_per_s']:.2f}",
            f"{training['cache_steps_per_s']:.2f}",
            _x(training["cache_speedup"], 2),
            f"{training['cache_fill_ms_per_image']:.1f}",
            f"{training['cache_entry_bytes']:,}",
        ]
        header = ["online steps/s", "seg cache steps/s", "cache speed-up", "cache fill ms/image", "entry bytes"]
        text += f"\n\n**Training, seg cache vs online** ({training['model']}, batch {training['batch_size']})\n\n"
        text += _table(header, [row])
    return text


def _training(section: dict) -> str:
    if "skipped" in section:
        return f"**Training 1 vs 2 processes**: skipped ({section['skipped']})."
    ddp, where = section["ddp"], section["ddp"]["where_the_time_goes"]
    body = [
        [1, f"{ddp['samples_per_s_1']:.2f}", "1.00×", f"{where['step_wall_s_1']:.3f}", f"{where['step_cpu_s_1']:.3f}", "—"],
        [2, f"{ddp['samples_per_s_2']:.2f}", _x(ddp["speedup_2_over_1"], 2), f"{where['step_wall_s_2']:.3f}",
         f"{where['step_cpu_s_2']:.3f}", f"{where['allreduce_ms_2']:.1f}"],
    ]  # fmt: skip
    header = ["processes", "samples/s", "speed-up", "step wall s", "step CPU s (per rank)", "gradient all-reduce ms"]
    text = f"**Small-synth recipe, DDP over gloo** (batch {ddp['per_device_batch']} per process)\n\n"
    text += _table(header, body)
    fsdp = section["fsdp"]
    launched, manual = fsdp["accelerate_fsdp_yaml"], fsdp["fully_shard"]
    rank0 = (manual.get("ranks") or [{}])[0]
    text += (
        f"\n\n**FSDP on CPU**: `accelerate launch --config_file training/accelerate/fsdp.yaml` ran the recipe as "
        f"`{launched['distributed_type']}` with a `{launched['wrapped_model']}` model (FSDP enabled: "
        f"{launched['fsdp_enabled']}); torch FSDP2 `fully_shard` by hand: exit {manual['returncode']}, "
        f"{rank0.get('units', '—')} units, losses {[round(x, 3) for x in rank0.get('losses', [])]}, checkpoint reloaded "
        f"equal: {rank0.get('reloaded_equal')}."
    )
    return text


def _memory(rows: list[dict]) -> str:
    body = []
    for row in rows:
        key = "cuda_peak_mib" if "cuda_peak_mib" in row["asarg"] else "peak_rss_mib"
        llava, asarg = row["llava"][key], row["asarg"][key]
        body.append([row["shape"], row["task"], row["seg"], row["asarg"]["batch"], f"{llava:.0f}", f"{asarg:.0f}",
                     f"{asarg - llava:+.0f}", f"{row['asarg']['seg_inputs_mib']:.1f}", _x(asarg / llava)])  # fmt: skip
    header = ["shape", "task", "ASaRG seg inputs", "batch", "LLaVA peak MiB", "ASaRG peak MiB", "difference",
              "of which seg inputs MiB", "ratio"]  # fmt: skip
    return "**Peak memory** (each in a fresh process; RSS on CPU, allocated memory on a GPU)\n\n" + _table(
        header, body
    )


def _pipeline(section: dict) -> str:
    labeler, cache, tracing = section["labeler"], section["seg_cache"], section["tracing"]
    return "**Pipeline**\n\n" + _table(
        ["what", "value"],
        [
            [f"labeler, {labeler['source']}, no sentence cache", f"{labeler['reports_per_s']:,.0f} reports/s"],
            ["seg cache entry, LLaVA-1.5 scale (24x24, 159 maps, 128 ch)", f"{cache['llava15_scale_bytes']:,} B"],
            ["seg cache entry, small-synth (8x8, 59 maps, 32 ch)", f"{cache['small_synth_bytes']:,} B"],
            ["CXAS masks at 512x512, 1 byte per pixel", f"{cache['full_resolution_mask_bytes']:,} B"],
            [
                f"tracing one report ({tracing['structures']} maps, {tracing['report_tokens']} tokens, small-synth)",
                f"{tracing['ms_per_report']:.0f} ms = {tracing['forwards_per_trace']:.1f} forwards",
            ],
        ],
    )


def _profile(section: dict) -> str:
    body = []
    for path, result in section.items():
        if path == "shape":
            continue
        top = ", ".join(f"{op['op'].removeprefix('aten::')} {100 * op['share']:.0f} %" for op in result["top_ops"][:4])
        body.append([path, f"{result['aten_ops_per_call']:.0f}", f"{100 * result['seg_path_share']:.1f} %", top])
    header = ["path", "aten ops per call", "time in the seg path", "top ops by self CPU time"]
    return f"**Profile** ({section['shape']} shape; torch.profiler)\n\n" + _table(header, body)


RENDERERS = {
    "parameters": _parameters,
    "latency": _latency,
    "segmenter": _segmenter,
    "training": _training,
    "memory": _memory,
    "pipeline": _pipeline,
    "profile": _profile,
}
