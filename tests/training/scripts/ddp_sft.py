"""Worker for tests/test_ddp.py: two SFT steps of a tiny ASaRG under torchrun (gloo on CPU); each rank writes the
checksum of its projector's seg columns so the test can check that DDP kept the replicas in sync."""

import json
import os
import sys

import datasets
import numpy as np
import torch
import trl
from PIL import Image

from asarg.tiny import tiny_asarg


def main(out_dir: str) -> None:
    model, processor = tiny_asarg(seed=0)  # same seed on every rank: identical replicas before training
    rng = np.random.default_rng(0)
    rows = [
        {
            "images": [Image.fromarray((rng.random((40, 30)) * 255).astype(np.uint8))],
            "messages": [
                {"role": "user", "content": "Findings?"},
                {"role": "assistant", "content": ["Mild cardiomegaly.", "The lungs are clear."][i % 2]},
            ],
        }
        for i in range(8)
    ]
    args = trl.SFTConfig(
        output_dir=out_dir,
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        remove_unused_columns=False,
        bf16=False,
        use_cpu=True,
        max_length=None,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
    )
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    linear = model.model.multi_modal_projector.linear_1
    rank = int(os.environ["RANK"])
    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "seg_checksum": float(linear.weight[:, linear.first_seg_column :].double().sum()),
        "seg_abs": float(linear.weight[:, linear.first_seg_column :].abs().sum()),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1])
