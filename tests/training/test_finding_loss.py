"""The auxiliary finding loss (`finding_loss_weight`), finding-balanced sampling (`finding_balance`) and the other
training-only switches of the recipe (group dropout): off by default
(LLaVA's parameters), a real gradient on the projector when on, added to TRL's loss, and rare findings drawn more."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset

from asarg.evaluation.report_labeler import CHEXPERT_LABELS

pytest.importorskip("trl")


def test_off_by_default_no_head_and_llava_parameters(make_asarg):
    model, _ = make_asarg()
    assert model.finding_head is None
    assert not any("finding" in name for name, _ in model.named_parameters())


def test_the_loss_reaches_the_projector_and_ignores_unknown_entries(make_asarg):
    from conftest import prompt_for, xray_like

    model, processor = make_asarg(finding_loss_weight=0.5)
    model.train()
    inputs = processor(images=[xray_like(), xray_like(seed=1)], text=[prompt_for(processor)] * 2, return_tensors="pt")
    labels = torch.zeros(2, 14)
    labels[0, 2] = 1
    out = model(**inputs, labels=inputs["input_ids"], finding_labels=labels)
    plain = model(**inputs, labels=inputs["input_ids"])
    assert out.finding_logits.shape == (2, 14)
    assert torch.allclose(out.loss, plain.loss + 0.5 * out.finding_loss, atol=1e-5)
    out.finding_loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    ignored = labels.clone()
    ignored[1] = -1  # the second study's findings unknown: only the first counts
    first = model(**inputs, finding_labels=ignored).finding_loss
    logits = model(**inputs, finding_labels=labels).finding_logits
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[0], labels[0])
    assert torch.allclose(first, expected, atol=1e-5)


def test_finding_labels_without_a_head_is_a_clear_error(make_asarg):
    from conftest import prompt_for, xray_like

    model, processor = make_asarg()
    inputs = processor(images=[xray_like()], text=[prompt_for(processor)], return_tensors="pt")
    with pytest.raises(ValueError, match="finding_loss_weight"):
        model(**inputs, finding_labels=torch.zeros(1, 14))


def test_a_plain_trainer_keeps_the_seg_and_finding_columns(make_asarg):
    """The seg inputs and finding_labels are in forward's signature: the column filter of transformers' Trainer
    (remove_unused_columns=True) keeps them."""
    import inspect

    model, _ = make_asarg()
    names = set(inspect.signature(model.forward).parameters)
    assert {"seg_pixel_values", "seg_maps", "seg_features", "finding_labels"} <= names


def _dataset(reports: list[str]) -> Dataset:
    rows = [
        {
            "images": [None],
            "messages": [
                {"role": "user", "content": []},
                {"role": "assistant", "content": [{"type": "text", "text": r}]},
            ],
        }
        for r in reports
    ]
    return Dataset.from_list(rows)


def test_finding_labels_come_from_the_labeler_and_balancing_draws_rare_findings_more():
    from asarg.training.sft_asarg import balance_by_findings, with_finding_labels

    reports = ["There is a small pneumothorax."] * 5 + ["The heart is normal. No acute findings."] * 95
    ds = with_finding_labels(_dataset(reports))
    labels = np.asarray(ds["finding_labels"])
    assert labels[0, CHEXPERT_LABELS.index("Pneumothorax")] == 1 and labels[-1].sum() <= 1
    assert balance_by_findings(ds, 0.0, seed=0) is ds
    balanced = np.asarray(balance_by_findings(ds, 1.0, seed=0)["finding_labels"])
    share = (balanced[:, CHEXPERT_LABELS.index("Pneumothorax")] == 1).mean()
    assert len(balanced) == 100 and share > 0.3  # 5% before; inverse frequency makes it about half


def test_report_order_reorders_the_training_reports_and_refuses_an_unknown_order():
    from asarg.training.sft_asarg import with_report_order

    ds = _dataset(["No pneumothorax. Nasogastric tube in the stomach.", "The lungs are clear."])
    assert with_report_order(ds, "as_written") is ds
    reordered = with_report_order(ds, "findings_first")
    texts = [messages[-1]["content"][-1]["text"] for messages in reordered["messages"]]
    assert texts == ["Nasogastric tube in the stomach. No pneumothorax.", "The lungs are clear."]
    assert reordered["messages"][0][0] == ds["messages"][0][0]  # the prompt is untouched
    with pytest.raises(ValueError, match="report_order='devices_last': choose one of"):
        with_report_order(ds, "devices_last")


def test_the_recipe_trains_the_finding_head(synthcxr, tmp_path, sft, monkeypatch):
    """Through TRL's step, not only the model's forward: TRL's fused LM head calls the backbone directly, so a finding
    loss read from the trainer's outputs once had no gradient and the head never moved (measured in issue 20)."""
    from test_training_recipe import run_main

    import asarg.training.sft_asarg as recipe

    started = {}

    def init_and_keep(model, ds):
        init_finding_head(model, ds)
        started["weight"] = model.finding_head.weight.detach().clone()
        started["projector"] = model.model.multi_modal_projector.linear_1.weight.detach().clone()

    init_finding_head = recipe.init_finding_head
    monkeypatch.setattr(recipe, "init_finding_head", init_and_keep)
    data_and_out = ["--dataset_name", str(synthcxr), "--output_dir", str(tmp_path / "out")]
    findings = ["--finding_loss_weight", "1.0", "--finding_balance", "0.5", "--max_steps", "3"]
    trainer = run_main(sft, *data_and_out, *findings)
    head = trainer.model.finding_head
    assert head is not None and trainer.model.config.finding_loss_weight == 1.0
    assert head.bias.abs().max() > 0.5  # started from the prevalences' log-odds, not from zero
    assert not torch.equal(head.weight.detach(), started["weight"])  # the loss reached the head ...
    logged = [entry for entry in trainer.state.log_history if "finding_loss" in entry]
    assert logged and all(0 < entry["finding_loss"] < 10 for entry in logged)  # ... and is in the step's loss


def test_the_finding_loss_moves_the_projector_in_the_trainer(make_asarg, monkeypatch):
    """One step of AsargSFTTrainer.compute_loss with and without finding labels: the projector's gradient differs
    by the finding loss's, and the head gets one."""
    from conftest import prompt_for, xray_like
    from trl import SFTConfig

    from asarg.training.sft_asarg import AsargSFTTrainer

    model, processor = make_asarg(finding_loss_weight=1.0)
    with torch.no_grad():
        model.finding_head.weight.normal_(0, 0.1)
    batch = processor(images=[xray_like(), xray_like(seed=1)], text=[prompt_for(processor)] * 2, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    ds = _dataset(["x", "y"])
    args = SFTConfig(output_dir="unused", use_cpu=True, report_to="none", max_length=None)
    trainer = AsargSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=ds)
    model.train()
    grads = []
    for labels in (None, torch.ones(2, 14)):
        model.zero_grad()
        inputs = dict(batch) | ({"finding_labels": labels} if labels is not None else {})
        trainer.compute_loss(model, inputs).backward()
        grads.append(model.model.multi_modal_projector.linear_1.weight.grad.clone())
    assert model.finding_head.weight.grad is not None and model.finding_head.weight.grad.abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])


def test_verdict_forcing_reaches_the_language_model_in_the_trainer(make_asarg):
    """TRL's fused LM head calls the backbone directly: AsargSFTTrainer hands the finding labels to the backbone, which
    builds the finding tokens the language model reads from them (rate 1), not from the classifier."""
    from conftest import prompt_for, xray_like
    from trl import SFTConfig

    from asarg.training.sft_asarg import AsargSFTTrainer

    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True, finding_token_label_rate=1.0)
    head = model.model.finding_tokens
    with torch.no_grad():
        head.present.normal_(0, 1.0)
    batch = processor(images=[xray_like(), xray_like(seed=1)], text=[prompt_for(processor)] * 2, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    args = SFTConfig(output_dir="unused", use_cpu=True, report_to="none", max_length=None)
    trainer = AsargSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=_dataset(["x", "y"]))
    read = []
    hook = model.model.language_model.register_forward_hook(
        lambda module, args, kwargs, output: read.append(kwargs["inputs_embeds"].detach()), with_kwargs=True
    )
    labels = torch.zeros(2, 14)
    labels[0, 3] = labels[1, 5] = 1.0
    model.train()
    try:
        trainer.compute_loss(model, dict(batch) | {"finding_labels": labels}).backward()
    finally:
        hook.remove()
    image = (batch["input_ids"] == model.config.image_token_id).nonzero()
    for row in range(2):
        positions = image[image[:, 0] == row, 1][-14:]  # the finding tokens follow the patch tokens
        assert torch.allclose(read[0][row, positions], head.embed(labels[row : row + 1])[0].detach(), atol=1e-5)


def test_a_recipe_restating_the_weight_keeps_the_trained_head(synthcxr, tmp_path, sft):
    """Stage 2 of a two-stage recipe restates `finding_loss_weight`: the head trained in stage 1 goes on from its
    weights, it is not drawn again from the prevalences."""
    from safetensors.torch import load_file
    from test_training_recipe import run_main

    first = tmp_path / "first"
    data = ["--dataset_name", str(synthcxr), "--max_steps", "2", "--finding_loss_weight", "1.0"]
    run_main(sft, *data, "--output_dir", str(first))
    trained = load_file(first / "model.safetensors")["finding_head.weight"]
    second = run_main(
        sft,
        *data,
        "--output_dir",
        str(tmp_path / "second"),
        "--model_name_or_path",
        str(first),
        "--learning_rate",
        "1e-12",
    )
    assert torch.allclose(second.model.finding_head.weight.detach(), trained, atol=1e-6)


def test_the_recipe_sets_group_dropout_on_a_checkpoint(synthcxr, tmp_path, sft):
    """`seg_group_dropout` / `seg_all_maps_dropout` reach a loaded checkpoint's config (the groups resolved from its
    class names or given), and train."""
    from test_training_recipe import run_main

    first = tmp_path / "first"
    run_main(sft, "--dataset_name", str(synthcxr), "--max_steps", "1", "--output_dir", str(first))
    cfg = json.loads((first / "config.json").read_text())
    cfg["seg_class_names"] = ["left lung", "right lung", "heart", "spine"][: cfg["num_seg_classes"]]
    (first / "config.json").write_text(json.dumps(cfg))
    from asarg.processing.checkpoints import write_checksums

    write_checksums(first)
    data = ["--dataset_name", str(synthcxr), "--max_steps", "2", "--model_name_or_path", str(first)]
    dropout = ["--seg_group_dropout", "0.3", "--seg_all_maps_dropout", "0.1"]
    trainer = run_main(sft, *data, *dropout, "--output_dir", str(tmp_path / "second"))
    config = trainer.model.config
    assert (config.seg_group_dropout, config.seg_all_maps_dropout) == (0.3, 0.1)
    assert config.seg_dropout_groups and all(group for group in config.seg_dropout_groups)


def test_the_recipe_switches_them_on_and_trains_the_classifier(synthcxr, tmp_path, sft):
    """`--finding_tokens true` on a model without them: the classifier starts from the training prevalences and
    trains (with verdict forcing), and the saved processor expands each image by the finding tokens."""
    from test_training_recipe import run_main
    from transformers import AutoProcessor

    out = tmp_path / "out"
    findings = ["--finding_loss_weight", "1.0", "--finding_tokens", "true", "--max_steps", "3"]
    forcing = ["--finding_token_label_rate", "0.5"]
    trainer = run_main(sft, "--dataset_name", str(synthcxr), "--output_dir", str(out), *findings, *forcing)
    head = trainer.model.model.finding_tokens
    assert head is not None and trainer.model.finding_head is None
    assert head.bias.abs().max() > 0.5  # the recipe started it from the training prevalences
    logged = [entry for entry in trainer.state.log_history if "finding_loss" in entry]
    assert logged
    assert AutoProcessor.from_pretrained(out).num_finding_tokens == trainer.model.config.num_finding_labels
    assert trainer.model.config.finding_token_label_rate == 0.5  # verdict forcing, saved with the model


def test_the_recipe_aligns_new_finding_tokens_first(synthcxr, tmp_path, sft):
    """`--finding_alignment_epochs`: the classifier is trained on the findings before SFT, its record is written
    beside the run and its thresholds are saved in the model's config."""
    import json

    from test_training_recipe import run_main

    out = tmp_path / "out"
    findings = ["--finding_loss_weight", "1.0", "--finding_tokens", "true", "--finding_alignment_epochs", "2"]
    run_main(sft, "--dataset_name", str(synthcxr), "--output_dir", str(out), *findings, "--max_steps", "1")
    record = json.loads((out / "finding_alignment.json").read_text())
    assert 1 <= record["epoch"] <= 2 and len(record["held_out_loss"]) >= record["epoch"]
    saved = json.loads((out / "config.json").read_text())["finding_thresholds"]
    assert saved == record["thresholds"] and len(saved) == 14


def test_the_recipe_adds_sided_finding_tokens_and_a_checkpoint_keeps_its_sides(synthcxr, tmp_path, sft):
    """`--finding_sides`: one finding token per side of each named observation after the 14 (the labels read from
    the reports' side words, the processor's image sequence longer by them); a recipe that continues the checkpoint
    with other sides is refused before training."""
    from test_training_recipe import run_main
    from transformers import AutoProcessor

    out = tmp_path / "out"
    findings = ["--finding_loss_weight", "1.0", "--finding_tokens", "true", "--max_steps", "1"]
    sides = ["--finding_sides", "Pleural Effusion", "Pneumothorax"]
    trainer = run_main(sft, "--dataset_name", str(synthcxr), "--output_dir", str(out), *findings, *sides)
    config = trainer.model.config
    assert config.finding_sides == ["Pleural Effusion", "Pneumothorax"] and config.num_finding_labels == 18
    assert trainer.model.model.finding_tokens.bias.shape == (18,)
    assert AutoProcessor.from_pretrained(out).num_finding_tokens == 18
    with pytest.raises(ValueError, match="finding tokens have"):
        run_main(
            sft, "--model_name_or_path", str(out), "--dataset_name", str(synthcxr),
            "--output_dir", str(tmp_path / "next"), *findings, "--finding_sides", "all",
        )  # fmt: skip
    with pytest.raises(ValueError, match="named for each side"):  # the gate reaches the config, which checks it
        run_main(
            sft, "--dataset_name", str(synthcxr), "--output_dir", str(tmp_path / "gated"), *findings, *sides,
            "--finding_side_gate", "true",
        )  # fmt: skip


def test_finding_alignment_without_finding_tokens_is_a_clear_error(synthcxr, tmp_path, sft):
    from test_training_recipe import run_main

    args = ["--dataset_name", str(synthcxr), "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    with pytest.raises(ValueError, match="finding_tokens"):
        run_main(sft, *args, "--finding_loss_weight", "1.0", "--finding_alignment_epochs", "2")


def test_a_negative_alignment_epoch_count_is_refused_before_any_model_loads(synthcxr, tmp_path, sft):
    from test_training_recipe import run_main

    args = ["--dataset_name", str(synthcxr), "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    with pytest.raises(ValueError, match="finding_alignment_epochs=-1"):
        run_main(sft, *args, "--finding_alignment_epochs", "-1")
    assert not (tmp_path / "out" / "model.safetensors").exists()
