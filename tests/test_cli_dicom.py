"""`asarg generate --dicom-out DIR`: per film a SEG + SR (and for a PNG the Secondary Capture they refer to) in a folder
the command owns; the grounded lines still go to standard output."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import xray_like

from asarg.cli import main

pytest.importorskip("highdicom", reason="the `dicom` extra (highdicom) writes SEG and SR")


def test_generate_dicom_out_writes_seg_and_sr_per_film(live_checkpoint, tmp_path, rg1_path, capsys):
    import pydicom

    from asarg.processing.dicom_out import read_sr_sentences
    from asarg.processing.outputs import read_marker

    png = tmp_path / "film.png"
    xray_like().save(png)
    out = tmp_path / "dicom"
    argv = ["generate", str(png), rg1_path, "--model", live_checkpoint, "--dicom-out", str(out), "--format", "json"]
    assert main([*argv, "--max-new-tokens", "8", "--top", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(row["dicom"]) for row in rows] == [{"seg", "sr", "image"}, {"seg", "sr"}]  # --ground implied
    written = sorted(p.name for p in out.iterdir() if p.suffix == ".dcm")
    assert written == sorted(name for row in rows for name in row["dicom"].values())
    assert read_marker(out)["command"] == "generate --dicom-out"
    for row in rows:
        sr = pydicom.dcmread(out / row["dicom"]["sr"])
        assert [s["text"] for s in read_sr_sentences(sr)] == [s["text"] for s in row["sentences"]]
        assert sr.Modality == "SR" and pydicom.dcmread(out / row["dicom"]["seg"]).Modality == "SEG"
    # Its own folder is reused; a folder it did not write is refused before the model loads.
    assert main([*argv, "--max-new-tokens", "8"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.dcm").write_bytes(b"x")
    capsys.readouterr()
    assert main(["generate", str(png), "--model", live_checkpoint, "--dicom-out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and len(err.splitlines()) == 1
    assert (foreign / "mine.dcm").read_bytes() == b"x"


def test_a_film_whose_header_cannot_carry_a_seg_is_named_and_still_reported(
    live_checkpoint, tmp_path, rg1_path, capsys
):
    import pydicom

    film = pydicom.dcmread(rg1_path)
    del film.StudyInstanceUID
    bad = tmp_path / "no-study.dcm"
    film.save_as(bad)
    png = tmp_path / "film.png"
    xray_like().save(png)
    out = tmp_path / "dicom"
    argv = ["generate", str(bad), str(png), "--model", live_checkpoint, "--dicom-out", str(out), "--format", "json"]
    assert main([*argv, "--max-new-tokens", "6", "--top", "1"]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: no DICOM SEG / SR written: the DICOM header has no StudyInstanceUID" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["image"] for row in rows] == [str(bad), str(png)]
    assert "dicom" not in rows[0] and "sentences" in rows[0]  # still grounded, just not written as DICOM
    assert sorted(p.name for p in out.glob("*.dcm")) == sorted(rows[1]["dicom"].values())


def dciodvfy_errors(path) -> list[str]:
    import subprocess

    run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    report = run.stdout + run.stderr
    assert any(iod in report for iod in ("Segmentation", "ComprehensiveSR", "SCImage")), report
    return [line for line in report.splitlines() if line.startswith("Error")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is absent")
def test_the_embedded_model_on_rg1_and_a_synthcxr_film_writes_dciodvfy_clean_dicom(tmp_path, rg1_path, capsys):
    """The issue's check, as a user runs it: `asarg generate RG1_UNCR.dcm synthcxr.png --dicom-out DIR` with the
    model shipped in the package."""
    from asarg.processing.dicom_out import read_sr_sentences
    from asarg.processing.synthcxr.dataset import read_manifest, write_dataset

    write_dataset(tmp_path / "synth", n=1, size=128, seed=909)
    png = tmp_path / "synth" / read_manifest(tmp_path / "synth", "train")[0]["image"]
    out = tmp_path / "dicom"
    assert main(["generate", rg1_path, str(png), "--dicom-out", str(out), "--format", "json", "--top", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The embedded model traces through its finding tokens: a sentence that asserts a finding carries structures, the
    # others none; a film whose report asserts none gets its SR alone (no SEG of nothing).
    assert [set(row["dicom"]) - {"seg"} for row in rows] == [{"sr"}, {"sr", "image"}]
    assert "seg" in rows[0]["dicom"]  # RG1's report asserts findings
    for row in rows:
        assert ("seg" in row["dicom"]) == any(s["finding"] for s in row["sentences"])
        for name in row["dicom"].values():
            assert not dciodvfy_errors(out / name), name
        sentences = read_sr_sentences(out / row["dicom"]["sr"])
        assert [s["text"] for s in sentences] == [s["text"] for s in row["sentences"]] and sentences
        assert [bool(s["structures"]) for s in sentences] == [bool(s["finding"]) for s in row["sentences"]]


def test_send_names_a_non_dicom_file_or_url_before_any_request(tmp_path, capsys):
    notes = tmp_path / "notes.dcm"
    notes.write_text("not DICOM", encoding="utf-8")
    for argv, expected in (
        (["send", "--dicomweb", "http://127.0.0.1:9/dicom-web", str(notes)], "not a DICOM Part 10 file"),
        (["send", "--dicomweb", "ftp://pacs/dicom-web", str(notes)], "not an http(s) URL"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
