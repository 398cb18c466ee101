"""Real-data loaders on tiny fixture trees built here: R2Gen annotation.json, MIMIC-CXR-JPG, JSONL, image folder;\nthe registry that picks one by format name."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from asarg.processing.loaders import LOADERS, load_dataset_by_format
from asarg.processing.loaders.common import CHEXPERT, parse_sections
from asarg.processing.loaders.jsonl import load_image_folder, load_jsonl, read_image_folder, read_jsonl
from asarg.processing.loaders.mimic_cxr_jpg import load_mimic_cxr_jpg, read_mimic_cxr_jpg
from asarg.processing.loaders.r2gen import load_r2gen, read_r2gen


def _img(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)


def _check_trl(ex, report):
    assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]
    assert [c["type"] for c in ex["messages"][0]["content"]][-1] == "text"
    assert ex["messages"][1]["content"][0]["text"] == report == ex["report"]
    assert len(ex["images"]) == sum(c["type"] == "image" for c in ex["messages"][0]["content"])


# --------------------------------------------------------------------------- R2Gen


@pytest.fixture
def r2gen_tree(tmp_path):
    for name in ("CXR1/0.png", "CXR1/1.png", "CXR2/0.png", "CXR3/0.png"):
        _img(tmp_path / "images" / name)
    ann = {
        "train": [
            {"id": "CXR1", "report": "The heart is normal. No effusion.", "image_path": ["CXR1/0.png", "CXR1/1.png"]},
            {"id": "CXR4", "report": "Clear lungs.", "image_path": ["CXR4/0.png"]},  # image missing
            {"id": "CXR5", "report": "  ", "image_path": ["CXR2/0.png"]},
        ],  # empty report
        "val": [{"id": "CXR2", "report": "Small left effusion.", "image_path": ["CXR2/0.png"]}],
        "test": [{"id": "CXR3", "report": "No pneumothorax.", "image_path": ["CXR3/0.png"]}],
    }
    (tmp_path / "annotation.json").write_text(json.dumps(ann))
    return tmp_path


def test_r2gen_loads_splits_and_counts_skips(r2gen_tree, caplog):
    with caplog.at_level(logging.WARNING):
        rows, skipped = read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images")
    assert skipped == {"missing image": 1, "empty report": 1}
    assert "skipped" in caplog.text
    dd = load_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images", max_images=1)
    assert {s: len(d) for s, d in dd.items()} == {"train": 1, "validation": 1, "test": 1}
    ex = dd["train"][0]
    _check_trl(ex, "The heart is normal. No effusion.")
    assert ex["images"][0].size == (16, 16) and ex["id"] == "CXR1"
    assert set(ex["labels"]) == set(CHEXPERT)
    assert len(read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images")[0]["train"][0]["images"]) == 2


def test_r2gen_errors(r2gen_tree, tmp_path):
    with pytest.raises(ValueError, match="missing image"):
        read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images", strict=True)
    with pytest.raises(ValueError, match="only the findings"):
        read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images", section="findings+impression")
    with pytest.raises(ValueError, match="does not exist"):
        read_r2gen(tmp_path / "nope.json", tmp_path)
    with pytest.raises(ValueError, match="no usable records"):
        read_r2gen(r2gen_tree / "annotation.json", tmp_path / "wrong_dir")
    (tmp_path / "bad.json").write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match="train/val/test"):
        read_r2gen(tmp_path / "bad.json", tmp_path)
    with pytest.raises(ValueError, match="section="):
        read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images", section="impression")


# --------------------------------------------------------------------------- MIMIC-CXR-JPG

# MIMIC-CXR style: banner, indented headings, blank lines holding a single space
REPORT = (
    "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  Cough.\n\n"
    " FINDINGS:\n \n There is a small left pleural effusion.  No pneumothorax.\n \n IMPRESSION:\n \n"
    " Small left effusion.\n"
)


def _write_csv(path, header, rows, gz=False):
    lines = [",".join(header)] + [",".join(str(x) for x in r) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


@pytest.fixture
def mimic_tree(tmp_path):
    # subject 10000032: study 1 ok (PA + lateral), study 2 no report, study 3 empty findings, study 4 missing jpg
    studies = [
        ("10000032", "50000001", "train"),
        ("10000032", "50000002", "train"),
        ("10000033", "50000003", "validate"),
        ("10000034", "50000004", "test"),
        ("10000035", "50000005", "test"),
    ]
    split, meta = [], []
    for subj, study, sp in studies:
        sdir = tmp_path / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}"
        for dicom, view in ((f"d{study}a", "PA"), (f"d{study}b", "LATERAL")):
            split.append((dicom, study, subj, sp))
            meta.append((dicom, subj, study, view))
            if study != "50000004":
                _img(sdir / f"{dicom}.jpg")
        rep = sdir.with_suffix(".txt")
        sdir.mkdir(parents=True, exist_ok=True)
        if study == "50000003":
            rep.write_text("FINDINGS:\n\nIMPRESSION: Normal chest.\n")
        elif study != "50000002":
            rep.write_text(REPORT)
    _write_csv(tmp_path / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split, gz=True)
    _write_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta)
    chex = [("10000032", "50000001", *["" for _ in CHEXPERT])]
    chex[0] = chex[0][:2] + tuple(
        "1.0" if o == "Pleural Effusion" else "0.0" if o == "Pneumothorax" else "" for o in CHEXPERT
    )
    _write_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *CHEXPERT], chex)
    return tmp_path


def test_parse_sections():
    s = parse_sections(REPORT)
    assert s["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert s["impression"] == "Small left effusion." and s["indication"] == "Cough."


def test_mimic_cxr_jpg_layout(mimic_tree):
    rows, skipped = read_mimic_cxr_jpg(mimic_tree)
    assert skipped == {"missing report": 1, "empty findings section": 1, "missing image": 1}
    assert [len(rows[s]) for s in ("train", "validation", "test")] == [1, 0, 1]
    ex = rows["train"][0]
    assert ex["images"][0].endswith("d50000001a.jpg") and len(ex["images"]) == 1  # frontal only
    assert ex["labels"]["Pleural Effusion"] == 1 and ex["labels"]["Pneumothorax"] == 0
    assert ex["labels"]["Edema"] is None
    both = read_mimic_cxr_jpg(mimic_tree, section="findings+impression")[0]["train"][0]["report"]
    assert both == "There is a small left pleural effusion. No pneumothorax. Small left effusion."
    dd = load_mimic_cxr_jpg(mimic_tree)
    assert set(dd) == {"train", "test"}
    _check_trl(dd["train"][0], "There is a small left pleural effusion. No pneumothorax.")
    assert dd["train"][0]["labels"]["Pleural Effusion"] == 1 and dd["test"][0]["labels"]["Edema"] is None


def test_mimic_cxr_jpg_errors(mimic_tree, tmp_path):
    with pytest.raises(ValueError, match="s50000002.*missing report"):
        read_mimic_cxr_jpg(mimic_tree, strict=True)
    with pytest.raises(ValueError, match="split.csv"):
        read_mimic_cxr_jpg(tmp_path / "empty")


# --------------------------------------------------------------------------- JSONL and image folder


def test_jsonl(tmp_path):
    _img(tmp_path / "img" / "a.png")
    _img(tmp_path / "img" / "b.png")
    lines = [
        {
            "id": "a",
            "image": "img/a.png",
            "findings": "No effusion.",
            "impression": "Normal.",
            "split": "test",
            "labels": {"Pleural Effusion": 0},
        },
        {"id": "b", "images": ["img/b.png"], "findings": "Mild cardiomegaly."},
        {"id": "c", "image": "img/missing.png", "findings": "Clear."},
        {"id": "d", "image": "img/a.png", "findings": ""},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows, skipped = read_jsonl(path, section="findings+impression")
    assert skipped == {"missing image": 1, "empty findings": 1}
    assert rows["test"][0]["report"] == "No effusion. Normal." and rows["test"][0]["labels"]["Pleural Effusion"] == 0
    dd = load_jsonl(path)
    assert {s: len(d) for s, d in dd.items()} == {"train": 1, "test": 1}
    _check_trl(dd["train"][0], "Mild cardiomegaly.")
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="data.jsonl:1: not valid JSON"):
        read_jsonl(path)


def test_image_folder(tmp_path):
    _img(tmp_path / "train" / "p1.png")
    (tmp_path / "train" / "p1.txt").write_text("FINDINGS: Small right effusion.\nIMPRESSION: Effusion.")
    _img(tmp_path / "test" / "p2.jpg")
    (tmp_path / "test" / "p2.txt").write_text("Heart size normal. Lungs clear.")
    _img(tmp_path / "p3.png")  # no report -> skipped
    _img(tmp_path / "train" / "p4.png")
    (tmp_path / "train" / "p4.txt").write_text("IMPRESSION: Normal.")  # no findings section -> skipped
    rows, skipped = read_image_folder(tmp_path, section="findings+impression")
    assert skipped == {"missing report": 1, "empty findings section": 1}
    assert rows["train"][0]["report"] == "Small right effusion. Effusion."
    assert rows["test"][0]["report"] == "Heart size normal. Lungs clear."
    dd = load_image_folder(tmp_path)
    _check_trl(dd["train"][0], "Small right effusion.")
    with pytest.raises(ValueError, match="p3.png: missing report"):
        read_image_folder(tmp_path, strict=True)


# --------------------------------------------------------------------------- the registry


def test_registry_loads_by_format_name(r2gen_tree, tmp_path):
    dd = load_dataset_by_format("r2gen", r2gen_tree / "annotation.json", image_dir=r2gen_tree / "images")
    assert {s: len(d) for s, d in dd.items()} == {"train": 1, "validation": 1, "test": 1}
    _img(tmp_path / "img" / "a.png")
    (tmp_path / "data.jsonl").write_text(json.dumps({"id": "a", "image": "img/a.png", "findings": "Clear."}))
    assert load_dataset_by_format("jsonl", tmp_path / "data.jsonl", section="findings")["train"][0]["id"] == "a"
    assert set(LOADERS) == {"synthcxr", "r2gen", "mimic-cxr-jpg", "jsonl", "image-folder"}


def test_registry_errors_name_the_formats_and_the_options(r2gen_tree):
    with pytest.raises(ValueError, match="unknown dataset format 'csv'; the formats are: synthcxr, r2gen, mimic"):
        load_dataset_by_format("csv", r2gen_tree)
    with pytest.raises(ValueError, match="'r2gen' .*image_dir"):
        load_dataset_by_format("r2gen", r2gen_tree / "annotation.json")
    with pytest.raises(ValueError, match="SynthCXR reports are findings only"):
        load_dataset_by_format("synthcxr", r2gen_tree, section="findings+impression")


@pytest.mark.slow
def test_the_package_imports_without_datasets():
    code = "import sys, asarg.processing.loaders; assert 'datasets' not in sys.modules, 'datasets was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
