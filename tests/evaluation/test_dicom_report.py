"""A grounded report as DICOM (issue 23): the SEG of the traced structures and the Comprehensive SR of the sentences
pass dciodvfy with no errors, and read back (highdicom / pydicom) with the same sentences, labels, segment
references, scores and mask pixels; a DICOM film's study and patient are kept, a PNG's identifiers are synthetic."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from conftest import xray_like

hd = pytest.importorskip("highdicom", reason="the `dicom` extra (highdicom) writes SEG and SR")

from asarg.evaluation.dicom_report import structure_masks, traced_structures, write_grounded_dicom  # noqa: E402
from asarg.evaluation.grounding import segment  # noqa: E402
from asarg.processing.dicom_out import DISCLAIMER, read_sr_sentences  # noqa: E402

REPORT = "Mild cardiomegaly. No pleural effusion. Possible small left pneumothorax. Lines are seen."
# Map names of CXAS classes: the anatomy groups "heart", "right lung", "left lung", "lungs" and "spine" form.
NAMES = ["heart", "right lung", "left lung", "spine"]


@pytest.fixture(scope="module")
def tiny(tokenizer_module):
    import torch

    from asarg.training.tiny import tiny_asarg_config, tiny_processor
    from modeling_asarg import AsargForConditionalGeneration

    config = tiny_asarg_config(tokenizer_module, seg_class_names=NAMES)
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.multi_modal_projector.seg_linear.weight.normal_(0, 0.5)
    return model, tiny_processor(tokenizer_module, config)


@pytest.fixture(scope="module")
def tokenizer_module():
    from asarg.training.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory, rg1_path):
    """The SEG + SR of a PNG film and of RG1_UNCR.dcm (a real CR chest film, 1841 x 1955)."""
    model, processor = tiny
    root = tmp_path_factory.mktemp("dicom")
    png = root / "film.png"
    xray_like(48, 40).save(png)
    out = root / "out"
    out.mkdir()
    return {
        "png": write_grounded_dicom(model, processor, png, out, report=REPORT, top=2),
        "dcm": write_grounded_dicom(model, processor, rg1_path, out, report=REPORT, top=3),
        "rg1": rg1_path,
        "png_path": png,
    }


def texts(sr) -> list[str]:
    """Every TEXT value of an SR's content tree."""
    out = []
    for item in sr.ContentSequence:
        out += [str(item.TextValue)] if item.ValueType == "TEXT" else []
        out += texts(item) if "ContentSequence" in item else []
    return out


@pytest.mark.parametrize("film", ["png", "dcm"])
def test_sr_sentences_labels_and_segment_references_round_trip(written, film):
    result = written[film]
    grounded = result["grounded"]
    sr = pydicom.dcmread(result["sr"])
    seg = hd.seg.segread(result["seg"])
    labels = {d.SegmentNumber: d.SegmentLabel for d in seg.SegmentSequence}
    back = read_sr_sentences(sr)
    assert (
        [s["text"] for s in back]
        == [s["text"] for s in grounded["sentences"]]
        == [
            "Mild cardiomegaly.",
            "No pleural effusion.",
            "Possible small left pneumothorax.",
            "Lines are seen.",
        ]
    )
    assert back[0]["labels"] == {"Cardiomegaly": "positive"}
    assert back[1]["labels"] == {"Pleural Effusion": "negative"}
    assert back[2]["labels"] == {"Pneumothorax": "uncertain"}
    for mine, original in zip(back, grounded["sentences"]):
        assert mine["labels"] == original["labels"]
        assert [labels[s["segment"]] for s in mine["structures"]] == [s["name"] for s in original["structures"]]
        assert [s["score"] for s in mine["structures"]] == pytest.approx([s["score"] for s in original["structures"]])
        assert {s["seg_uid"] for s in mine["structures"]} == {seg.SOPInstanceUID}
    assert list(labels.values()) == result["structures"] == traced_structures(grounded)
    # Coded anatomy: SNOMED CT where the structure has a code (both in the SEG and as the SR's finding site).
    types = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0] for d in seg.SegmentSequence}
    assert types["heart"].CodeValue == "80891009" and types["heart"].CodingSchemeDesignator == "SCT"
    assert all(t.CodingSchemeDesignator in {"SCT", "99CXAS"} for t in types.values())
    # The SR's evidence: the film and the SEG, by study / series / SOP instance.
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    source = pydicom.dcmread(result.get("image", written["rg1"]), stop_before_pixels=True)
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}
    referenced = seg.SourceImageSequence[0] if "SourceImageSequence" in seg else seg.ReferencedSeriesSequence[0]
    assert source.SOPInstanceUID in str(referenced)


@pytest.mark.parametrize("film", ["png", "dcm"])
def test_seg_pixels_are_the_traced_structures_masks(written, tiny, film):
    from asarg.processing.image_io import load_image

    model, processor = tiny
    result = written[film]
    seg = hd.seg.segread(result["seg"])
    image = load_image(written["rg1"] if film == "dcm" else written["png_path"])
    expected = structure_masks(model, segment(model, processor, image), result["structures"])
    stored = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[seg.SourceImageSequence[0].ReferencedSOPInstanceUID],
        segment_numbers=list(range(1, len(result["structures"]) + 1)),
    )[0]
    assert stored.shape == (image.height, image.width, len(result["structures"]))
    assert np.array_equal(np.moveaxis(stored, -1, 0).astype(bool), expected)
    assert expected.any() and not expected.all()  # real masks, not a constant


def test_a_dicom_film_keeps_its_patient_and_study(written):
    film = pydicom.dcmread(written["rg1"], stop_before_pixels=True)
    for kind in ("seg", "sr"):
        ds = pydicom.dcmread(written["dcm"][kind])
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID"):
            assert ds.get(keyword) == film.get(keyword), (kind, keyword)
        assert ds.SeriesInstanceUID != film.SeriesInstanceUID
        assert ds.SOPInstanceUID != film.SOPInstanceUID
        assert "not for clinical use" in ds.SeriesDescription
    assert DISCLAIMER in texts(pydicom.dcmread(written["dcm"]["sr"]))
    assert "image" not in written["dcm"]


def test_a_png_film_gets_synthetic_identifiers(written):
    png = written["png"]
    image = pydicom.dcmread(png["image"])
    assert image.PatientName == "SYNTHETIC^ASARG" and image.PatientID.startswith("ASARG-SYNTHETIC-")
    assert "SYNTHETIC" in image.StudyDescription
    for kind in ("seg", "sr"):
        ds = pydicom.dcmread(png[kind])
        assert ds.PatientID == image.PatientID and ds.StudyInstanceUID == image.StudyInstanceUID
    assert any("SYNTHETIC identifiers" in text for text in texts(pydicom.dcmread(png["sr"])))
    assert image.Rows == 48 and image.Columns == 40


def test_uids_come_from_the_content(written, tiny, tmp_path):
    """A rerun writes the same instances (a PACS sees an update, not a duplicate)."""
    model, processor = tiny
    again = write_grounded_dicom(model, processor, written["rg1"], tmp_path, report=REPORT, top=3)
    for kind in ("seg", "sr"):
        first, second = pydicom.dcmread(written["dcm"][kind]), pydicom.dcmread(again[kind])
        assert first.SOPInstanceUID == second.SOPInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("film", ["png", "dcm"])
def test_dciodvfy_finds_no_errors(written, film):
    paths = [written[film][k] for k in ("seg", "sr", "image") if k in written[film]]
    for path in paths:
        run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
        report = run.stdout + run.stderr
        assert any(iod in report for iod in ("Segmentation", "ComprehensiveSR", "SCImage")), report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}:\n" + "\n".join(errors)


def test_a_report_traced_to_no_structure_gets_the_sr_alone_and_shares_have_no_unit(tokenizer_module, tmp_path):
    """A model with finding tokens traces only sentences that assert a finding: a normal report has no structure,
    so no SEG is written and the SR (dciodvfy-clean) stands alone; a traced sentence's score is a share (UCUM "1")."""
    import torch

    from asarg.training.tiny import tiny_asarg_config, tiny_processor
    from modeling_asarg import AsargForConditionalGeneration

    config = tiny_asarg_config(tokenizer_module, seg_class_names=NAMES, finding_loss_weight=1.0, finding_tokens=True)
    torch.manual_seed(0)
    model, processor = AsargForConditionalGeneration(config).eval(), tiny_processor(tokenizer_module, config)
    png = tmp_path / "film.png"
    xray_like(48, 40).save(png)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    normal = write_grounded_dicom(model, processor, png, tmp_path / "a", report="The lungs are clear.", top=2)
    assert set(normal) >= {"sr", "image"} and "seg" not in normal and normal["structures"] == []
    assert [s["text"] for s in read_sr_sentences(normal["sr"])] == ["The lungs are clear."]
    traced = write_grounded_dicom(model, processor, png, tmp_path / "b", report="Mild cardiomegaly.", top=2)
    assert "seg" in traced and traced["grounded"]["sentences"][0]["method"] == "finding"
    units = [
        item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
        for item in _items(pydicom.dcmread(traced["sr"]))
        if item.ValueType == "NUM"
    ]
    assert units and set(units) == {"1"}
    for path in (normal["sr"], traced["sr"], traced["seg"]):
        run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
        assert not [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")], path.name


def _items(sr):
    for item in sr.ContentSequence:
        yield item
        if "ContentSequence" in item:
            yield from _items(item)


def test_a_report_in_any_characters_comes_back_from_the_sr_as_written(tiny, tmp_path):
    """The SR is UTF-8 (ISO_IR 192): non-ASCII text round-trips instead of coming back as "?"."""
    model, processor = tiny
    png = tmp_path / "film.png"
    xray_like(48, 40).save(png)
    (tmp_path / "out").mkdir()
    report = "Épanchement pleural droit – 5 mm ± 1. Cœur normal."
    written = write_grounded_dicom(model, processor, png, tmp_path / "out", report=report, top=1)
    assert [s["text"] for s in read_sr_sentences(written["sr"])] == [
        "Épanchement pleural droit – 5 mm ± 1.",
        "Cœur normal.",
    ]
    run = subprocess.run(["dciodvfy", "-new", str(written["sr"])], capture_output=True, text=True, timeout=60)
    assert not [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
