"""The embedded default model (`asarg/default_model/`): it is there, it loads the way a Hub user loads it, and it
scores what its model card says on its hold-out set, regenerated here from the seed the card names."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fresh_process import BLOCK_REPOSITORY

from asarg.processing import models

CARD_SCORES = models.EMBEDDED / "scores.json"

# Only transformers / torch / PIL: the owner's Auto classes on the assembled folder, nothing of this repository.
FRESH_GENERATE = BLOCK_REPOSITORY + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, prompt, images_json, out_path = sys.argv[1:5]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    processor.tokenizer.padding_side = "left"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    paths, reports = json.load(open(images_json)), []
    with torch.inference_mode():
        for start in range(0, len(paths), 16):
            images = [Image.open(p).convert("L") for p in paths[start : start + 16]]
            inputs = processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=160, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]
            reports += [r.strip() for r in processor.post_process_image_text_to_text(new)]
    json.dump({"model": type(model).__name__, "reports": reports}, open(out_path, "w"))
    """
)


def test_the_default_model_is_embedded_with_its_card_and_checksums():
    from asarg.processing.checkpoints import verify_checksums

    assert (models.EMBEDDED / "model.safetensors").stat().st_size < 30 * 2**20  # the size limit
    assert "model.safetensors" in verify_checksums(models.EMBEDDED)
    card = (models.EMBEDDED / "README.md").read_text()
    assert "model-index" in card and "Not for clinical use" in card
    config = json.loads((models.EMBEDDED / "config.json").read_text())
    assert config["use_seg_features"] and config["use_seg_maps"] and config["seg_map_dropout"] > 0


def test_the_released_generations_are_the_cards_scores_and_the_card_reports_every_ce_variant():
    """Issue 23: the hold-out generations ship with the model, re-score to its card's CE, and the card names the CE
    variants the literature reports."""
    from asarg.evaluation.clinical_efficacy import compute_ce

    rows = [json.loads(line) for line in (models.EMBEDDED / "generations.jsonl").read_text().splitlines()]
    scores = json.loads((models.EMBEDDED / "scores.json").read_text())
    assert len(rows) == scores["studies"]
    again = compute_ce([r["generated"] for r in rows], [r["reference"] for r in rows])
    assert again["f1_micro"] == pytest.approx(scores["ce"]["f1_micro"])
    card = (models.EMBEDDED / "README.md").read_text()
    for variant in ("Micro-F1-14", "Macro-F1-14", "Micro-F1-5", "Macro-F1-5", "Micro-F1-5+"):
        assert f"| {variant} |" in card


def test_default_model_path_assembles_a_loadable_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ASARG_CACHE", str(tmp_path))
    folder = models.default_model_path()
    names = {p.name for p in Path(folder).iterdir()}
    assert Path(folder).parent == tmp_path
    assert {"model.safetensors", "config.json", "modeling_asarg.py", "configuration_asarg.py"} <= names
    assert models.default_model_path() == folder  # assembled once, then reused


@pytest.mark.slow
def test_fresh_process_auto_class_load_scores_within_0_02_of_the_model_card(tmp_path):
    from asarg.evaluation.clinical_efficacy import compute_ce
    from asarg.experiments.default_model import DefaultModelSettings
    from asarg.processing.loaders.common import DEFAULT_PROMPT
    from asarg.processing.synthcxr.dataset import SPLITS, read_manifest, write_dataset

    card = json.loads(CARD_SCORES.read_text())
    n, seed = card["settings"]["holdout"]
    data = tmp_path / "holdout"
    write_dataset(data, n, seed=seed, size=128)  # the card's hold-out studies, regenerated from their seed
    records = [rec for split in SPLITS for rec in read_manifest(data, split)]
    (tmp_path / "images.json").write_text(json.dumps([str(data / rec["image"]) for rec in records]))
    script = tmp_path / "generate.py"
    script.write_text(FRESH_GENERATE)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    argv = [sys.executable, str(script), models.default_model_path(), DEFAULT_PROMPT, str(tmp_path / "images.json")]
    proc = subprocess.run([*argv, str(tmp_path / "out.json")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["model"] == "AsargForConditionalGeneration"
    ce = compute_ce(result["reports"], [rec["findings_text"] for rec in records])
    assert ce["f1_micro"] == pytest.approx(card["ce"]["f1_micro"], abs=0.02)
    assert DefaultModelSettings().holdout == (n, seed)  # the card describes the current recipe's hold-out set
