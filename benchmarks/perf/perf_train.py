"""Training throughput of the small-synth recipe in 1 and 2 processes (DDP over gloo, CPU), and the FSDP path.

DDP runs `training/sft_asarg.py`'s `main` (through `perf_train_worker.py`) on the recipe
`training/recipes/small_synth_cpu.yaml`, from a small-synth checkpoint with random weights and a SynthCXR folder
written for the purpose, `torch.distributed.run --standalone` for the process group. One process and two alternate
(1, 2, 1, 2, ...), so both see the same background load. Samples/s counts every rank's batch; the per-rank wall
and CPU time of a step and a timed all-reduce of one gradient's worth of floats say where a step's time goes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("perf_train_worker.py")
RECIPE = REPO / "training" / "recipes" / "small_synth_cpu.yaml"


def prepare(root: Path, n_studies: int = 80) -> tuple[Path, Path]:
    """(checkpoint, dataset): the small-synth features+maps arm with random weights, and a SynthCXR folder."""
    from perf_data import small_synth_model

    from asarg.processing.synthcxr.dataset import write_dataset

    checkpoint, data = root / "init", root / "synthcxr"
    if not (checkpoint / "config.json").exists():
        model, processor = small_synth_model()
        model.save_pretrained(checkpoint)
        processor.save_pretrained(checkpoint)
    if not (data / "dataset_info.json").exists():
        write_dataset(data, n_studies, seed=0, size=128)
    return checkpoint, data


def recipe_args(checkpoint: Path, data: Path, out: Path, steps: int, batch: int, extra=()) -> list[str]:
    return [
        "--config", str(RECIPE), "--model_name_or_path", str(checkpoint), "--dataset_name", str(data),
        "--output_dir", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
        "--warmup_steps", "0", "--logging_steps", "1000", "--save_strategy", "no", "--seed", "0", *extra,
    ]  # fmt: skip


def launch(processes: int, args: list[str], result_dir: Path, env_extra=None, launcher=None, timeout=600) -> dict:
    """Run the worker in `processes` processes; returns {"returncode", "stderr_tail", "ranks": [...]}."""
    launcher = launcher or [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command = [*launcher, str(processes), str(WORKER), str(result_dir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.update({"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", **(env_extra or {})})
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    ranks = [json.loads(p.read_text()) for p in sorted(result_dir.glob("rank*.json"))]
    return {"returncode": proc.returncode, "stderr_tail": proc.stderr[-3000:], "ranks": ranks}


def ddp_scaling(root: Path, rounds: int, steps: int, batch: int = 8) -> dict:
    """Samples/s of 1 and 2 processes, alternating; the per-rank timings of the last 2-process run."""
    checkpoint, data = prepare(root)
    samples = {1: [], 2: []}
    last = {}
    for index in range(rounds):
        for processes in (1, 2):
            out = root / f"ddp-{processes}-{index}"
            run = launch(processes, recipe_args(checkpoint, data, out / "trainer", steps, batch), out)
            if run["returncode"] != 0 or len(run["ranks"]) != processes:
                raise RuntimeError(f"DDP run with {processes} process(es) failed:\n{run['stderr_tail']}")
            step = max(rank["step_wall_s"] for rank in run["ranks"])  # a DDP step ends when the slowest rank does
            samples[processes].append(processes * batch / step)
            last[processes] = run["ranks"]
    ratios = [two / one for one, two in zip(samples[1], samples[2])]
    return {
        "per_device_batch": batch,
        "steps": steps,
        "samples_per_s_1": statistics.median(samples[1]),
        "samples_per_s_2": statistics.median(samples[2]),
        "speedup_2_over_1": statistics.median(ratios),
        "rounds": rounds,
        "one_process": last[1][0],
        "two_processes": last[2],
        "where_the_time_goes": where_the_time_goes(last[1][0], last[2]),
    }


def where_the_time_goes(one: dict, two: list[dict]) -> dict:
    """A 2-process step against a 1-process step: compute (CPU time of a rank), waiting (wall minus CPU: the core was
    busy with another process, or the rank waited for the other one) and the gradient all-reduce."""
    slowest = max(two, key=lambda rank: rank["step_wall_s"])
    return {
        "step_wall_s_1": one["step_wall_s"],
        "step_cpu_s_1": one["step_cpu_s"],
        "step_wall_s_2": slowest["step_wall_s"],
        "step_cpu_s_2": slowest["step_cpu_s"],
        "not_on_cpu_s_2": slowest["step_wall_s"] - slowest["step_cpu_s"],
        "allreduce_ms_2": slowest["allreduce_ms"],
        "load_average_2": slowest["load_average"],
    }


FSDP_YAML = REPO / "training" / "accelerate" / "fsdp.yaml"


def accelerate_fsdp_launcher() -> list[str]:
    """`accelerate launch --config_file training/accelerate/fsdp.yaml --num_processes N`: what a user runs."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate), "launch", "--config_file", str(FSDP_YAML), "--num_processes"]


def fsdp_check(root: Path, steps: int = 3, batch: int = 4) -> dict:
    """The FSDP paths on CPU, 2 processes (gloo): the recipe under `accelerate launch` with
    training/accelerate/fsdp.yaml, and torch FSDP2 `fully_shard` by hand (perf_fsdp_worker.py: train, save with
    save_pretrained, load back)."""
    checkpoint, data = prepare(root)
    out = root / "fsdp-accelerate"
    args = recipe_args(checkpoint, data, out / "trainer", steps, batch)
    accelerate = launch(2, args, out, launcher=accelerate_fsdp_launcher())
    ranks = accelerate["ranks"]
    through_accelerate = {
        "command": "accelerate launch --config_file training/accelerate/fsdp.yaml --num_processes 2 ...",
        "returncode": accelerate["returncode"],
        "distributed_type": ranks[0]["distributed_type"] if ranks else None,
        "wrapped_model": ranks[0]["wrapped_model"] if ranks else None,
        "fsdp_enabled": ranks[0]["fsdp_enabled"] if ranks else None,
        "accelerate_use_fsdp": ranks[0]["accelerate_use_fsdp"] if ranks else None,
    }
    out = root / "fsdp2"
    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*worker, str(Path(__file__).with_name("perf_fsdp_worker.py")), str(checkpoint), str(data), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([*command, str(steps), str(batch)], capture_output=True, text=True, timeout=600, env=env)
    fsdp2 = {
        "returncode": proc.returncode,
        "ranks": [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))],
    }
    if proc.returncode != 0:
        fsdp2["stderr_tail"] = proc.stderr[-3000:]
    return {"accelerate_fsdp_yaml": through_accelerate, "fully_shard": fsdp2}
