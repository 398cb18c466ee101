"""Real-data loaders on tiny fixture trees built here: R2Gen annotation.json, MIMIC-CXR-JPG, JSONL, image folder;\nthe registry that picks one by format name."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
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


# --------------------------------------------------------------------------- images checked before the first step


def _jpeg(path, tail=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes() + tail)


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def bad_images(tmp_path):
    """{name: (path, expected problem)}: the files a crawl of a real archive turns up."""
    d = tmp_path / "img"
    cases = {}
    _img(d / "ok.png")
    cases["ok"] = (d / "ok.png", None)
    _jpeg(d / "ok.jpg")
    cases["jpeg"] = (d / "ok.jpg", None)
    _jpeg(d / "padded.jpg", b"\0" * 10_000)  # bytes after the end marker: Pillow decodes it, so it is kept
    cases["padded jpeg"] = (d / "padded.jpg", None)
    (d / "text.png").write_text("<html>404 Not Found</html>")
    cases["not an image"] = (d / "text.png", "not an image")
    (d / "empty.png").write_bytes(b"")
    cases["0 bytes"] = (d / "empty.png", "empty image file")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(d / "cut.png")
    _cut(d / "cut.png")  # the header is whole, the pixel data is not
    cases["cut-off png"] = (d / "cut.png", "corrupt image")
    _jpeg(d / "cut.jpg")
    _cut(d / "cut.jpg", 0.7)
    cases["cut-off jpeg"] = (d / "cut.jpg", "truncated image")
    cases["missing"] = (d / "gone.png", "missing image")
    (d / "folder.png").mkdir()
    cases["a folder"] = (d / "folder.png", "missing image")
    return cases


def test_image_problem_names_each_kind_of_bad_file(bad_images):
    from asarg.processing.loaders.common import image_problem

    for name, (path, expected) in bad_images.items():
        problem = image_problem(path)
        assert (problem is None) if expected is None else problem.startswith(expected), (name, problem)
    # What the check protects against: each file it rejects, `datasets` cannot decode either.
    for path, expected in bad_images.values():
        if expected and path.is_file():
            with pytest.raises(OSError):  # UnidentifiedImageError is one
                with Image.open(path) as im:
                    im.load()


@pytest.mark.parametrize("kind", ["not an image", "0 bytes", "missing", "cut-off png"])
def test_jsonl_skips_and_counts_a_bad_image_or_names_it_with_strict(bad_images, tmp_path, kind):
    path, expected = bad_images[kind]
    lines = [
        {"id": "good", "image": "img/ok.png", "findings": "Clear."},
        {"id": "bad", "image": f"img/{path.name}", "findings": "Clear."},
    ]
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows, skipped = read_jsonl(manifest)
    assert [r["id"] for r in rows["train"]] == ["good"] and skipped == {expected: 1}
    with pytest.raises(ValueError, match=rf"data.jsonl:2 \(id 'bad'\): {expected}.*{path.name}"):
        read_jsonl(manifest, strict=True)


def test_image_folder_r2gen_and_mimic_check_images_too(bad_images, r2gen_tree, mimic_tree, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(bad_images["not an image"][0], folder / "x.png")
    (folder / "x.txt").write_text("Clear lungs.")
    with pytest.raises(ValueError, match="x.png: not an image"):
        read_image_folder(folder, strict=True)
    (r2gen_tree / "images" / "CXR2" / "0.png").write_bytes(b"")
    assert read_r2gen(r2gen_tree / "annotation.json", r2gen_tree / "images")[1]["empty image file"] == 1
    only = {"val": [{"id": "CXR2", "report": "Small left effusion.", "image_path": ["CXR2/0.png"]}]}
    (r2gen_tree / "only.json").write_text(json.dumps(only))
    with pytest.raises(ValueError, match=r"'CXR2': empty image file: .*CXR2/0.png"):
        read_r2gen(r2gen_tree / "only.json", r2gen_tree / "images", strict=True)
    jpg = next(mimic_tree.rglob("d50000001a.jpg"))
    jpg.write_text("not a jpeg")
    assert read_mimic_cxr_jpg(mimic_tree)[1]["not an image"] == 1


# --------------------------------------------------------------------------- malformed manifests


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "image": "a.png", "findings": "Clear."}\n\xff\xfe{"id": "b"}\n', r"data.jsonl:2: not UTF-8"),
        (b'["a.png", "Clear."]\n', r"data.jsonl:1: a JSON list, not an object"),
        (b'{"id": "a", "images": "a.png", "findings": "Clear."}\n', r"'images' must be a list of path strings"),
        (b'{"id": "a", "image": 7, "findings": "Clear."}\n', r"'images' must be a list of path strings"),
        (b'{"id": "a", "image": "a.png", "findings": ["Clear."]}\n', r"'findings' must be text, got a JSON list"),
        (
            b'{"id": "a", "image": "a.png", "findings": "x", "labels": {"Pleural effusion": 1}}\n',
            r"label 'Pleural effusion' is not a CheXpert observation \(did you mean 'Pleural Effusion'\?\)",
        ),
        (b'{"id": "a", "image": "a.png", "findings": "x", "labels": {"Edema": "yes"}}\n', r"label 'Edema' is 'yes'"),
    ],
)
def test_jsonl_line_of_the_wrong_shape_is_an_error_naming_the_line(tmp_path, content, message):
    _img(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_jsonl(tmp_path / "data.jsonl")


def test_jsonl_with_a_byte_order_mark_loads(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "image": "a.png", "findings": "Clear."}\n')
    assert read_jsonl(tmp_path / "data.jsonl")[0]["train"][0]["id"] == "a"


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("[]", r"expected an object with top-level keys train/val/test, got a JSON list"),
        ('[{"id": "x"}]', r"got a JSON list"),
        ('{"train": {"id": "x"}}', r"'train' must be a list of record objects"),
        ('{"train": [{"id": "CXR1", "report": "x", "image_path": "CXR1/0.png"}]}', r"'image_path' must be a list"),
        ('{"train": [', r"not a UTF-8 JSON file"),
    ],
)
def test_r2gen_annotation_of_the_wrong_shape_is_a_clear_error(tmp_path, annotation, message):
    (tmp_path / "annotation.json").write_text(annotation)
    with pytest.raises(ValueError, match=message):
        read_r2gen(tmp_path / "annotation.json", tmp_path)
