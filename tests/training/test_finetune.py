"""`asarg finetune`: a folder of the user's own images + reports -> a fine-tuned checkpoint that generates."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from asarg.training import finetune


def image_folder(root, synthcxr, n=6):
    """The user's layout: train/<name>.png + train/<name>.txt (reports in plain text), built from SynthCXR studies."""
    records = [json.loads(line) for line in (synthcxr / "train.jsonl").read_text().splitlines()][:n]
    (root / "train").mkdir(parents=True)
    for i, rec in enumerate(records):
        Image.open(synthcxr / rec["image"]).save(root / "train" / f"case-{i}.png")
        (root / "train" / f"case-{i}.txt").write_text("FINDINGS: " + rec["findings_text"])
    return root


def losses(out) -> list[float]:
    state = json.loads(sorted(out.glob("checkpoint-*"))[-1].joinpath("trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_finetune_on_an_image_folder_writes_a_checkpoint_that_generates(quick_model, synthcxr, tmp_path, lora):
    from asarg.processing.inference import generate_reports, load_for_generation

    data = image_folder(tmp_path / "my-data", synthcxr)
    out = tmp_path / "mine"
    argv = [str(data), "--out", str(out), "--model", str(quick_model), "--steps", "6"] + (["--lora"] if lora else [])
    assert finetune.main([*argv, "--", "--per_device_train_batch_size", "2", "--learning_rate", "3e-3",
                          "--logging_steps", "1", "--save_steps", "6"]) == 0  # fmt: skip
    history = losses(out)
    assert len(history) == 6 and history[-1] < history[0]  # it learns the user's reports
    if lora:
        assert (out / "adapter_model.safetensors").is_file()
        from peft import PeftModel

        from asarg.processing.checkpoints import open_checkpoint

        base, processor = open_checkpoint(str(quick_model), trust_remote_code=True)
        model = PeftModel.from_pretrained(base, out).eval()
    else:
        model, processor = load_for_generation(str(out))
    film = Image.open(next((data / "train").glob("*.png")))
    reports = generate_reports(model, processor, [film], max_new_tokens=8)
    assert len(reports) == 1 and isinstance(reports[0], str)  # a 6-step toy model may write only whitespace


def test_recipe_keys_after_the_separator_reach_the_recipe(tmp_path):
    import argparse

    args = argparse.Namespace(data="d", format="jsonl", out=str(tmp_path), steps=3, lora=True)
    argv = finetune.recipe_args(args, "some/model", ["--learning_rate", "1e-4"])
    from asarg.training.sft_asarg import make_parser

    script, training, model = make_parser().parse_args_and_config(argv)
    assert (script.dataset_format, model.model_name_or_path, model.use_peft) == ("jsonl", "some/model", True)
    assert (training.max_steps, training.learning_rate) == (3, 1e-4)


def test_a_missing_default_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from asarg.processing import models

    monkeypatch.setattr(models, "EMBEDDED", tmp_path / "nothing-here")
    assert finetune.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err


def test_a_kill_during_the_first_save_starts_afresh_instead_of_asking_to_resume(tmp_path):
    import argparse

    (tmp_path / "checkpoint-1").mkdir()  # what kill -9 mid-save leaves: no trainer_state.json yet
    (tmp_path / "checkpoint-1" / "model.safetensors").write_bytes(b"")
    args = argparse.Namespace(data="d", format="jsonl", out=str(tmp_path), steps=None, lora=False)
    assert "--resume_from_checkpoint" not in finetune.recipe_args(args, "m", [])
