"""The pieces fit together: SynthCXR -> TRL SFT of a tiny ASaRG (built-in segmenter) -> generate -> CE metric."""

from __future__ import annotations

import math

import pytest
from conftest import REPO, cpu_sft_config

trl = pytest.importorskip("trl")
evaluate = pytest.importorskip("evaluate")


def test_synthcxr_sft_generate_and_score(make_asarg, tmp_path):
    from asarg.processing.synthcxr.dataset import load_synthcxr, write_dataset

    write_dataset(tmp_path / "synth", n=20, seed=0, size=64)
    splits = load_synthcxr(tmp_path / "synth")
    model, processor = make_asarg()

    args = cpu_sft_config(tmp_path, max_steps=2, learning_rate=1e-3)
    train = splits["train"].select_columns(["images", "messages"])
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)

    model.eval()
    predictions = []
    for example in splits["test"]:
        prompt = processor.apply_chat_template(example["messages"][:1], add_generation_prompt=True)
        inputs = processor(images=example["images"], text=prompt, return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        predictions += processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1] :])
    references = list(splits["test"]["report"])
    assert len(predictions) == len(references) == 2 and all(isinstance(p, str) for p in predictions)

    ce = evaluate.load(str(REPO / "metrics" / "chexpert_ce"))
    result = ce.compute(predictions=predictions, references=references)
    assert result["num_reports"] == 2 and 0.0 <= result["f1_micro"] <= 1.0
    perfect = ce.compute(predictions=references, references=references)
    assert perfect["f1_micro"] == 1.0  # the labeler is deterministic: a report agrees with itself
