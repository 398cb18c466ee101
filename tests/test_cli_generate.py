"""`asarg generate`: images in, one report per image out; a bad file is named and the others still run; `--ground`
adds labels and traced anatomy per sentence."""

from __future__ import annotations

import json

import pytest
from conftest import xray_like

from asarg.cli import main
from asarg.generate import generate_reports

OBSERVATION_VALUES = {"positive", "uncertain", "negative"}


def synthcxr_images(root, n: int) -> list[str]:
    from asarg.processing.synthcxr.dataset import read_manifest

    return [str(root / record["image"]) for record in read_manifest(root, "train")[:n]]


def test_generate_writes_json_lines_and_names_the_bad_file(live_checkpoint, tmp_path, capsys):
    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(good):
        xray_like(seed=i).save(path)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "reports.jsonl"
    argv = ["generate", str(good[0]), str(bad), str(good[1]), "--model", live_checkpoint]
    code = main([*argv, "--json", "--out", str(out), "--max-new-tokens", "5", "--batch-size", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "image/s" not in err  # no progress bar: stderr is not a terminal
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in good]
    assert all(isinstance(row["report"], str) for row in rows)


def check_grounded(row: dict) -> None:
    """The `--ground --json` schema: ground_report's dict plus "image"."""
    assert {"image", "report", "image_size", "labels", "sentences"} <= set(row)
    width, height = row["image_size"]
    for sentence in row["sentences"]:
        assert row["report"][slice(*sentence["span"])] == sentence["text"]
        assert set(sentence["labels"].values()) <= OBSERVATION_VALUES
        assert 1 <= len(sentence["structures"]) <= 3
        for structure in sentence["structures"]:
            assert isinstance(structure["name"], str) and isinstance(structure["score"], float)
            box = structure["box"]
            assert box is None or (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height)


@pytest.mark.slow
def test_ground_json_on_a_real_radiograph_and_synthcxr_with_a_bad_file(
    live_checkpoint, rg1_path, synthcxr, tmp_path, capsys
):
    bad = tmp_path / "empty.dcm"
    bad.write_bytes(b"")
    images = [rg1_path, str(bad), *synthcxr_images(synthcxr, 2)]
    argv = [
        "generate",
        *images,
        "--model",
        live_checkpoint,
        "--ground",
        "--json",
        "--top",
        "3",
        "--max-new-tokens",
        "8",
    ]
    code = main([*argv, "--batch-size", "2", "--progress"])
    captured = capsys.readouterr()
    assert code == 1 and str(bad) in captured.err
    assert "4/4" in captured.err  # --progress: the bar is drawn on stderr although it is not a terminal
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["image"] for row in rows] == [images[0], *images[2:]]
    assert rows[0]["image_size"] == [1841, 1955]  # the DICOM's own size: boxes are in its pixels
    assert rows[1]["image_size"] == [64, 64]
    assert any(row["sentences"] for row in rows)
    for row in rows:
        check_grounded(row)


def test_ground_text_has_one_indented_line_per_sentence(live_checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    xray_like().save(image)
    code = main(
        ["generate", str(image), "--model", live_checkpoint, "--ground", "--top", "2", "--max-new-tokens", "6"]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    path, report = lines[0].split("\t")
    assert path == str(image)
    from asarg.evaluation.grounding import split_sentences

    assert len(lines) == 1 + len(split_sentences(report))
    assert all(line.startswith("    ") and "class_" in line for line in lines[1:])


def test_without_model_uses_the_default_and_says_when_it_is_missing(tmp_path, monkeypatch, capsys):
    import asarg.processing.models

    monkeypatch.setattr(asarg.processing.models, "EMBEDDED", tmp_path / "no-default-model")
    image = tmp_path / "a.png"
    xray_like().save(image)
    assert main(["generate", str(image)]) == 2
    err = capsys.readouterr().err
    assert "embedded default model is missing" in err and "--model" in err and "Traceback" not in err


def test_ground_needs_a_model_that_reads_maps(make_asarg, tmp_path, capsys):
    model, processor = make_asarg(use_seg_maps=False)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = tmp_path / "a.png"
    xray_like().save(image)
    assert main(["generate", str(image), "--model", str(tmp_path / "model"), "--ground"]) == 2
    assert "use_seg_maps=False" in capsys.readouterr().err


def test_batched_reports_equal_one_at_a_time(make_asarg):
    model, processor = make_asarg(live_seg=True)
    images = [xray_like(seed=i) for i in range(3)]
    batched = generate_reports(model, processor, images, batch_size=3, max_new_tokens=6)
    single = [generate_reports(model, processor, [image], batch_size=1, max_new_tokens=6)[0] for image in images]
    assert batched == single and len(batched) == 3


def test_ground_runs_the_segmenter_once_per_image_and_writes_the_plain_report(
    make_asarg, tmp_path, monkeypatch, capsys
):
    import asarg.generate

    model, processor = make_asarg(live_seg=True)
    runs = []
    model.model.segmenter.register_forward_hook(lambda module, args, out: runs.append(args[0].shape[0]))
    monkeypatch.setattr(
        asarg.generate, "load_for_generation", lambda model_id, trust_remote_code=False: (model.eval(), processor)
    )
    images = []
    for seed in range(2):
        images.append(str(tmp_path / f"{seed}.png"))
        xray_like(seed=seed).save(images[-1])
    argv = ["generate", *images, "--model", "in-memory", "--json", "--max-new-tokens", "6"]
    assert main([*argv, "--ground", "--top", "2"]) == 0
    grounded = [json.loads(line)["report"] for line in capsys.readouterr().out.splitlines()]
    # Per image: one segmentation for the input check (asarg.processing.input_check), and one that generation,
    # tracing and boxes share.
    assert runs == [1, 1, 1, 1]
    assert main(argv) == 0
    assert [json.loads(line)["report"] for line in capsys.readouterr().out.splitlines()] == grounded


def test_a_finding_traced_sentence_line_shows_the_verdict_and_the_shares_in_percent():
    from asarg.generate import _sentence_line

    sentence = {
        "text": "Small left pleural effusion.",
        "labels": {"Pleural Effusion": "positive"},
        "method": "finding",
        "finding": "Pleural Effusion (left)",
        "confidence": 0.84,
        "structures": [{"name": "left lung", "score": 0.42, "box": [0, 0, 20, 20]}],
    }
    line = _sentence_line(sentence)
    assert "Pleural Effusion (left) 84%:" in line and "left lung 42% [0, 0, 20, 20]" in line
    by_maps = _sentence_line(sentence | {"method": "maps", "finding": None, "confidence": None})
    assert "left lung 0.420 [0, 0, 20, 20]" in by_maps and "%" not in by_maps
