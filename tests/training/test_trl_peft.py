"""Fine-tuning seams: TRL's SFTTrainer (its real fused-loss path) reaches the seg columns; a PEFT LoRA adapter on the
language model with the projector fully trainable saves, reloads and generates."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_sft_config, prompt_for, xray_like

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")

REPORTS = ["The heart size is normal.", "Small left pleural effusion.", "Mild cardiomegaly.", "The lungs are clear."]


def _dataset(n: int = 4):
    rows = []
    for i in range(n):
        rows.append(
            {
                "images": [xray_like(seed=i)],
                "messages": [
                    {"role": "user", "content": "Findings?"},
                    {"role": "assistant", "content": REPORTS[i % len(REPORTS)]},
                ],
            }
        )
    return datasets.Dataset.from_list(rows)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
def test_sft_trainer_step_reaches_the_seg_columns(make_asarg, tmp_path, checkpointing):
    model, processor = make_asarg()
    seg_linear = model.model.multi_modal_projector.seg_linear
    seg_before = seg_linear.weight.detach().clone()
    seen = []
    model.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(sorted(kw)), with_kwargs=True)

    args = cpu_sft_config(tmp_path, gradient_checkpointing=checkpointing)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=processor)
    trainer.train()

    assert seen and "seg_pixel_values" in seen[0], f"the base model got {seen[:1]}"
    assert trainer.state.log_history[0]["loss"] > 0
    assert not torch.equal(seg_linear.weight, seg_before), "seg columns did not train"


def test_lora_on_the_language_model_with_trainable_projector_saves_reloads_generates(make_asarg, tmp_path):
    model, processor = make_asarg(live_seg=True)
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)

    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=cpu_sft_config(tmp_path),
        train_dataset=_dataset(),
        processing_class=processor,
        peft_config=lora,
    )
    trainer.train()
    tuned = trainer.model.eval()
    trainable = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "language_model" in n for n in trainable)
    assert any("multi_modal_projector.modules_to_save" in n and "linear_1.weight" in n for n in trainable)
    assert any("multi_modal_projector.modules_to_save" in n and "seg_linear.weight" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)

    adapter_dir = tmp_path / "adapter"
    tuned.save_pretrained(adapter_dir)
    inputs = processor(images=xray_like(seed=9), text=prompt_for(processor), return_tensors="pt")
    expected = tuned.generate(**inputs, max_new_tokens=6, do_sample=False)

    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    reloaded = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    assert torch.equal(reloaded.generate(**inputs, max_new_tokens=6, do_sample=False), expected)
    merged = reloaded.merge_and_unload()
    assert type(merged).__name__ == "AsargForConditionalGeneration"
    assert torch.equal(merged.generate(**inputs, max_new_tokens=6, do_sample=False), expected)
