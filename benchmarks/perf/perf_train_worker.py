"""Worker of the DDP/FSDP benchmarks: the SFT recipe (`training/sft_asarg.py`'s own `main`), with step timing.

    torchrun --standalone --nproc_per_node 2 benchmarks/perf/perf_train_worker.py RESULT_DIR --config RECIPE.yaml ...

Runs `asarg.training.sft_asarg.main` unchanged, except that its SFTTrainer gets a callback that times every step
(wall clock and this process's CPU time), and writes `RESULT_DIR/rank<r>.json`. After training it times a gloo
all-reduce of one gradient's worth of floats, the communication a DDP step adds, so a report can say where the time
of a data-parallel step goes.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from asarg.training import sft_asarg


class StepTimer(TrainerCallback):
    def __init__(self):
        self.wall, self.cpu = [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def timed_trainer(timer: StepTimer):
    class TimedSFTTrainer(sft_asarg.AsargSFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, callbacks=[timer], **kwargs)

    return TimedSFTTrainer


def allreduce_ms(numel: int, repeats: int = 5) -> float | None:
    """Median time of one gloo all-reduce of `numel` float32 (None outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    grads = torch.randn(numel)
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(result_dir: str, recipe_args: list[str]) -> None:
    torch.set_num_threads(1)
    timer = StepTimer()
    sft_asarg.AsargSFTTrainer = timed_trainer(timer)  # this process only: the recipe's main, with a timing callback
    script_args, training_args, model_args = sft_asarg.make_parser().parse_args_and_config(recipe_args)
    start = time.perf_counter()
    trainer = sft_asarg.main(script_args, training_args, model_args)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    skip = min(2, max(0, len(timer.wall) - 2))  # the first steps build caches and buffers
    result = {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "fsdp_enabled": bool(getattr(trainer, "is_fsdp_enabled", False)),
        "wrapped_model": type(trainer.model_wrapped).__name__,
        "accelerate_use_fsdp": os.environ.get("ACCELERATE_USE_FSDP"),
        "per_device_batch": trainer.args.per_device_train_batch_size,
        "steps": len(timer.wall),
        "step_wall_s": statistics.median(timer.wall[skip:]),
        "step_cpu_s": statistics.median(timer.cpu[skip:]),
        "total_wall_s": time.perf_counter() - start,
        "trainable_params": trainable,
        "allreduce_ms": allreduce_ms(trainable),
        "load_average": list(os.getloadavg()),
    }
    Path(result_dir).mkdir(parents=True, exist_ok=True)
    (Path(result_dir) / f"rank{result['rank']}.json").write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()
    # As training/sft_asarg.py: no end() under torch.distributed (destroying the gloo group while DDP holds it can
    # deadlock at exit on this machine).
    if trainer.args.world_size == 1:
        trainer.end()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
