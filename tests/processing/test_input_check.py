"""Is this a frontal chest radiograph the model can read? The input check refuses, with the reason, films that are
not (a photo, CT, a lateral or skull DICOM, a blank film, a strip), cautions on films unlike the training films, and
passes the model's own kind of film; `asarg generate` refuses or cautions accordingly."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest
from PIL import Image

from asarg.cli import main
from asarg.processing.image_io import dicom_header, load_image
from asarg.processing.input_check import (
    check_input,
    distance,
    fit_input_stats,
    header_problems,
    load_input_stats,
    pixel_problems,
)

pydicom_data = pytest.importorskip("data_store")
from pydicom.data import get_testdata_file  # noqa: E402

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.mark.parametrize(
    "header, reason",
    [
        ({"Modality": "CT"}, "Modality is CT"),
        ({"Modality": "CR", "BodyPartExamined": "SKULL"}, "SKULL, not the chest"),
        ({"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "LL"}, "lateral"),
    ],
)
def test_a_header_that_is_not_a_frontal_chest_film_is_named(header, reason):
    assert any(reason in problem for problem in header_problems(header))


def test_a_frontal_chest_header_passes():
    assert header_problems({"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"}) == []
    assert header_problems(dicom_header(get_testdata_file("RG1_UNCR.dcm"))) == []


@pytest.mark.parametrize(
    "image, reason",
    [
        (Image.new("L", (256, 256), 0), "blank"),
        (Image.new("L", (256, 256), 255), "blank"),
        (Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 20), np.uint8)), "about square"),
    ],
)
def test_blank_films_and_strips_are_named(image, reason):
    assert any(reason in problem for problem in pixel_problems(image))


def test_the_distance_threshold_flags_about_its_quantile_and_far_points():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4000, 5))
    stats = fit_input_stats(vectors, quantile=0.95)
    fresh = rng.normal(size=(2000, 5))
    rate = np.mean([distance(stats, v) > stats["threshold"] for v in fresh])
    assert 0.02 < rate < 0.09
    assert distance(stats, np.full(5, 10.0)) > stats["threshold"]


@pytest.fixture(scope="module")
def default_model():
    from asarg.processing.inference import load_for_generation
    from asarg.processing.models import default_model_path

    return load_for_generation(default_model_path())


def test_the_default_model_carries_validated_statistics(default_model):
    stats = load_input_stats(default_model[0].name_or_path)
    assert stats is not None and stats["anatomy_pass_rate"] >= 0.99 and "synthetic" in stats["training_data"]


def test_a_photo_is_refused_and_a_synthcxr_film_passes(default_model, synthcxr_128):
    model, processor = default_model
    photo = check_input(model, processor, load_image(PHOTO))
    assert photo["refuse"] and photo["reasons"]
    film = check_input(model, processor, synthcxr_128)
    assert not film["refuse"] and not film["warnings"]


def test_a_real_chest_dicom_is_read_with_a_caution(default_model):
    model, processor = default_model
    path = get_testdata_file("RG1_UNCR.dcm")
    verdict = check_input(model, processor, load_image(path), dicom_header(path))
    assert not verdict["refuse"] and any("synthetic" in warning for warning in verdict["warnings"])


@pytest.fixture(scope="module")
def synthcxr_128(tmp_path_factory):
    from asarg.processing.synthcxr.dataset import read_manifest, write_dataset

    folder = tmp_path_factory.mktemp("synth128")
    write_dataset(folder, 3, seed=31337, size=128)
    return Image.open(folder / read_manifest(folder, "train")[0]["image"]).convert("L")


def test_generate_refuses_non_chest_films_and_force_says_so(tmp_path, capsys):
    lateral = tmp_path / "lateral.dcm"
    dataset = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    dataset.ViewPosition = "LL"
    dataset.save_as(lateral)
    black = tmp_path / "black.png"
    Image.new("L", (300, 300), 0).save(black)
    out = tmp_path / "reports.jsonl"
    argv = ["generate", str(PHOTO), str(lateral), str(black), "--json", "--max-new-tokens", "4", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("Not read:") == 3 and "lateral" in err and "blank" in err
    assert out.read_text() == ""  # no report for a film it refused
    assert main([*argv, "--force", "--overwrite"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(row["input_check"]["refuse"] for row in rows)
    assert capsys.readouterr().err.count("Not read:") == 3  # still said, on stderr
