"""Worker for tests/training/test_ddp_lora.py: the recipe script's own parser and main() under torchrun (gloo on CPU),
then each rank writes a checksum of every trainable parameter (LoRA A/B, the projector's trained copy), and of the
projector's frozen original, so the test can check that DDP kept the replicas identical and that training moved them.

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_lora_sft.py OUT_JSON_DIR RECIPE_ARGS...
"""

import hashlib
import json
import os
import sys

from asarg.training import sft_asarg


def checksum(tensor) -> dict:
    """A float64 sum (readable in a failure message) and a sha256 of the exact bytes (equal only if bit-identical)."""
    values = tensor.detach().cpu().contiguous()
    return {
        "sum": float(values.double().sum()),
        "abs": float(values.double().abs().sum()),
        "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
    }


def trainable_checksums(model) -> dict[str, dict]:
    return {name: checksum(p) for name, p in model.named_parameters() if p.requires_grad}


def main(json_dir: str, recipe_args: list[str]) -> None:
    trainer = sft_asarg.main(*sft_asarg.make_parser().parse_args_and_config(recipe_args))
    model = trainer.model
    frozen = {name: checksum(p) for name, p in model.named_parameters() if "original_module" in name}
    result = {
        "rank": int(os.environ["RANK"]),
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": str(trainer.accelerator.state.backend),
        "losses": [row["loss"] for row in trainer.state.log_history if "loss" in row],
        "trainable": trainable_checksums(model),
        "frozen_projector": frozen,
    }
    with open(os.path.join(json_dir, f"rank{result['rank']}.json"), "w") as handle:
        json.dump(result, handle)
    # Leave together, on a barrier, and without trainer.end(): on the loaded 2-core machine, destroying the gloo group
    # right after the last all_gather deadlocked rank 1 (the group's destructor joins gloo's worker threads holding
    # the GIL, which a worker needs to free that all_gather's tensors). The process exit tears the group down.
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
