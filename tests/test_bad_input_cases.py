"""Issue 18's open cases, each fed the bad input: a clear error that says what was wrong and what to do, before any
model loads, and nothing left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import prompt_for, xray_like
from PIL import Image

from asarg.cli import main
from asarg.processing.image_io import load_image
from asarg.processing.loaders.jsonl import read_image_folder


def test_images_per_sample_must_match_each_samples_image_tokens(make_asarg):
    _, processor = make_asarg()
    prompt = prompt_for(processor)
    a, b = xray_like(), xray_like(seed=1)
    with pytest.raises(ValueError, match="Sample 0 has 2 image"):
        processor(images=[[a, b], []], text=[prompt, prompt])
    assert processor(images=[[a], [b]], text=[prompt, prompt], return_tensors="pt")["pixel_values"].shape[0] == 2


def test_a_garbage_dcm_is_not_a_dicom_file(tmp_path):
    path = tmp_path / "film.dcm"
    path.write_bytes(b"\x08\x00" + os.urandom(3000))
    with pytest.raises(ValueError, match="not a DICOM file"):
        load_image(path)


def test_a_decompression_bomb_is_named_as_too_large(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 160,000 pixels is then twice over PIL's bomb limit
    with pytest.raises(ValueError, match="too large to decode safely"):
        load_image(path)


def test_a_folder_of_dicom_films_and_lone_reports_says_why_nothing_is_usable(tmp_path, rg1_path):
    shutil.copy(rg1_path, tmp_path / "a.dcm")
    (tmp_path / "b.txt").write_text("The lungs are clear.")
    with pytest.raises(ValueError, match="DICOM film.*report without an image|report without an image.*DICOM film"):
        read_image_folder(tmp_path)


def test_a_mistyped_dataset_path_is_named_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import asarg.training.model_setup as setup

    monkeypatch.setattr(setup, "_build", lambda args: pytest.fail("the model loaded before the path was checked"))
    missing = tmp_path / "no-such-data"
    code = main(["finetune", str(missing), "--model", "tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no such file or folder" in err and str(missing) in err and "Traceback" not in err


def test_pushing_a_folder_without_weights_names_it_and_leaves_nothing(tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    out = tmp_path / "hub"
    assert main(["push", str(checkpoint), "org/x", "--dry-run", "--allow-unverified", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds no weights" in err and ".partial" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert not list(Path(tmp_path).glob(".*partial"))
