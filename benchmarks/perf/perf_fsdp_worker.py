"""Worker of the FSDP benchmark: the small-synth recipe's model sharded with torch FSDP2 (`fully_shard`) over gloo.

    torchrun --standalone --nproc_per_node 2 benchmarks/perf/perf_fsdp_worker.py CHECKPOINT DATASET OUT [STEPS]

accelerate (and the Trainer's `fsdp=` argument) leave FSDP off on CPU (see perf_train.py), so this worker shards by
hand, as `training/accelerate/fsdp.yaml` asks accelerate to: each Llama decoder layer and CLIP encoder layer is its
own unit, the rest (projector, embeddings, the frozen U-Net) the root unit. It trains STEPS AdamW steps on the
recipe's batches (TRL's collator, each rank its own rows), gathers the full state dict, saves a checkpoint from
rank 0 with `save_pretrained` and loads it back; OUT/rank<r>.json records the timings, the losses and the check.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist


def shard(model) -> int:
    """fully_shard every decoder/encoder layer, then the root; returns how many units were made."""
    from torch.distributed.fsdp import fully_shard
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layers = [m for m in model.modules() if isinstance(m, (LlamaDecoderLayer, CLIPEncoderLayer))]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return len(layers) + 1


def batches(processor, dataset: str, rank: int, world: int, size: int, steps: int) -> list[dict]:
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from asarg.processing.loaders import load_dataset_by_format

    train = load_dataset_by_format("synthcxr", dataset)["train"].select_columns(["images", "messages"])
    collator = DataCollatorForVisionLanguageModeling(processor)
    rows = [train[i] for i in range(rank, len(train), world)]  # a distributed sampler's split of the rows
    return [collator([dict(r) for r in rows[s * size : (s + 1) * size]]) for s in range(steps)]


def train(model, data: list[dict]) -> tuple[list[float], list[float]]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses, times = [], []
    for batch in data:
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    return losses, times


def save_and_reload(model, checkpoint: str, out: Path, processor) -> dict:
    """Gather the full state dict (every rank takes part), save it from rank 0, load it back and compare."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForImageTextToText

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return {}
    fresh = AutoModelForImageTextToText.from_pretrained(checkpoint)
    fresh.load_state_dict(state, strict=True)
    fresh.save_pretrained(out / "checkpoint")
    processor.save_pretrained(out / "checkpoint")
    loaded = AutoModelForImageTextToText.from_pretrained(out / "checkpoint").state_dict()
    same = all(torch.equal(loaded[name], tensor) for name, tensor in state.items() if name in loaded)
    moved = bool(state["model.multi_modal_projector.seg_linear.weight"].abs().sum() > 0)  # it starts at zero
    return {"saved": str(out / "checkpoint"), "reloaded_equal": bool(same), "keys": len(state), "trained": moved}


def main(checkpoint: str, dataset: str, out: str, steps: int = 3, batch: int = 4) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import modeling_asarg  # noqa: F401  (registers ASaRG with the Auto classes)

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    model.model.vision_tower.requires_grad_(False)  # the recipe's freeze_vision_tower
    processor = AutoProcessor.from_pretrained(checkpoint)
    units = shard(model)
    losses, times = train(model, batches(processor, dataset, rank, world, batch, steps))
    result = {"rank": rank, "world_size": world, "units": units, "losses": losses, "per_device_batch": batch}
    result["step_wall_s"] = statistics.median(times[1:] or times)
    result |= save_and_reload(model, checkpoint, Path(out), processor)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:]))
