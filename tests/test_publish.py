"""`asarg push`: the Hub folder of a checkpoint, its model card, and the upload call (the Hub is not reachable)."""

from __future__ import annotations

import json

import pytest
from conftest import prompt_for
from fresh_process import generate_in_fresh_process

from asarg import publish
from asarg.experiments.default_model import MODEL_FILES
from asarg.processing.models import REMOTE_CODE
from asarg.processing.outputs import MARKER

# A trained run's model files (the list the default model's export copies too), the five Hub code files, and what
# `asarg push` adds: card, scores, checksums. (The fresh-process test below shows the folder is complete.)
HUB_FOLDER = {*MODEL_FILES, *REMOTE_CODE, "scores.json", "README.md", "checksums.sha256"}


@pytest.fixture(scope="module")
def dry_run(quick_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "org--asarg"
    assert publish.main([str(quick_model), "org/asarg", "--dry-run", "--out", str(out)]) == 0
    return out


def test_dry_run_writes_exactly_the_hub_folder(dry_run, quick_model):
    # The one extra file is the local "written by asarg push" marker, which is neither listed nor uploaded.
    assert {p.name for p in dry_run.iterdir()} == HUB_FOLDER | {MARKER}
    assert MARKER not in "\n".join(publish.listing(dry_run))
    assert not (dry_run / "training_args.bin").exists()
    from asarg.processing.checkpoints import verify_checksums

    assert {"model.safetensors", "modeling_asarg.py", "config.json"} <= set(
        verify_checksums(dry_run)
    )  # raises if damaged


def test_dry_run_lists_what_would_be_uploaded(quick_model, tmp_path, capsys):
    assert publish.main([str(quick_model), "org/asarg", "--dry-run", "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "README.md" in out and "dry run: nothing uploaded" in out


def test_model_card_metadata_is_valid_and_matches_the_scores(dry_run):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    card = ModelCard.load(dry_run / "README.md")
    meta = metadata_load(dry_run / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "apache-2.0" and "custom_code" in meta["tags"]
    scores = json.loads((dry_run / "scores.json").read_text())
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["CE micro-F1"] == pytest.approx(scores["ce"]["f1_micro"], abs=1e-4)
    assert results["CE macro-F1"] == pytest.approx(scores["ce"]["f1_macro"], abs=1e-4)
    assert 'AutoModel.from_pretrained("org/asarg", trust_remote_code=True)' in card.text
    assert "Not for clinical use" in card.text
    assert "CC BY-NC-SA" not in card.text  # no CXAS segmenter inside this one


def test_the_cards_commands_are_ones_the_cli_takes_and_its_recipe_is_the_pipelines(dry_run):
    import shlex

    from asarg.experiments.default_model import QUICK_DEFAULT
    from asarg.training.finetune import arg_parser

    text = (dry_run / "README.md").read_text()
    commands = [line.split("#")[0] for line in text.splitlines() if line.startswith("asarg finetune ")]
    parsed = [arg_parser().parse_args(shlex.split(command)[2:]) for command in commands]  # exits on a bad option
    assert [(args.data, args.model, args.lora) for args in parsed] == [("my-films/", "org/asarg", False)] * 1 + [
        ("my-films/", "org/asarg", True)
    ]
    assert (
        f"{QUICK_DEFAULT.refine_steps} steps at {QUICK_DEFAULT.refine_learning_rate:g}, vision tower trained" in text
    )


def test_a_cxas_segmenter_puts_its_licence_on_the_card():
    from asarg.training.model_card import card_data

    data = card_data({"segmenter_config": {"architecture": "cxas_unet_resnet50"}}, None, "org/asarg-cxas")
    assert data.license == "cc-by-nc-sa-4.0"


def test_the_card_says_when_the_model_reads_finding_tokens():
    from asarg.training.model_card import _model_section

    plain = {"text_config": {}, "vision_config": {}}
    assert "finding tokens" not in _model_section(plain)
    assert "14 more image tokens" in _model_section(plain | {"finding_tokens": True, "num_finding_labels": 14})


@pytest.mark.slow
def test_owner_line_loads_the_dry_run_folder_in_a_fresh_process_and_generates(dry_run, tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(dry_run, trust_remote_code=True)
    result = generate_in_fresh_process(dry_run, prompt_for(processor), tmp_path)
    assert result["owner"] == "AsargForConditionalGeneration"
    assert len(result["owner_tokens"][0]) > len(processor.tokenizer(prompt_for(processor))["input_ids"])


def test_upload_creates_the_repo_then_uploads_the_folder(dry_run, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", a, k)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, *a, **k: calls.append(("create_branch", a, k)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(("upload_folder", (), k)) or "url")
    publish.upload(dry_run, "org/asarg", private=True, revision="v1")
    assert calls[0] == ("create_repo", ("org/asarg",), {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][0] == "create_branch" and calls[1][2]["branch"] == "v1"
    upload = calls[2][2]
    assert (upload["repo_id"], upload["folder_path"], upload["revision"]) == ("org/asarg", str(dry_run), "v1")


def test_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert publish.main([str(tmp_path), "org/asarg", "--dry-run", "--out", str(tmp_path / "o")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


@pytest.mark.slow
def test_push_space_dry_run_writes_the_space_folder_with_the_wheel(tmp_path, capsys):
    from asarg import publish_space

    out = tmp_path / "space"
    assert publish_space.main(["org/asarg-demo", "--dry-run", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"app.py", "README.md", "requirements.txt"} <= names
    wheels = [n for n in names if n.endswith(".whl")]
    assert len(wheels) == 1 and wheels[0] in (out / "requirements.txt").read_text()
    assert "dry run: nothing uploaded" in capsys.readouterr().out


def test_a_space_upload_creates_a_gradio_space(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(k))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(k) or "url")
    publish.upload(tmp_path, "org/asarg-demo", repo_type="space")
    assert calls[0]["repo_type"] == "space" and calls[0]["space_sdk"] == "gradio"
    assert calls[1]["repo_type"] == "space" and calls[1]["folder_path"] == str(tmp_path)
