"""Worker for tests/training/test_ddp.py: two SFT steps of a tiny ASaRG under torchrun (gloo on CPU); each rank writes the
checksum of its projector's seg columns so the test can check that DDP kept the replicas in sync."""

import json
import os
import sys
from pathlib import Path

import datasets
import torch
import trl

from asarg.training.tiny import tiny_asarg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the suite's shared helpers
from conftest import cpu_sft_config, xray_like  # noqa: E402


def main(out_dir: str) -> None:
    model, processor = tiny_asarg(seed=0)  # same seed on every rank: identical replicas before training
    rows = [
        {
            "images": [xray_like(seed=i)],
            "messages": [
                {"role": "user", "content": "Findings?"},
                {"role": "assistant", "content": ["Mild cardiomegaly.", "The lungs are clear."][i % 2]},
            ],
        }
        for i in range(8)
    ]
    args = cpu_sft_config(Path(out_dir), max_steps=2)
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    seg_columns = model.model.multi_modal_projector.seg_linear.weight
    rank = int(os.environ["RANK"])
    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "seg_checksum": float(seg_columns.double().sum()),
        "seg_abs": float(seg_columns.abs().sum()),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1])
