"""MIMIC-CXR-JPG layout -> TRL rows, one row per study.

Expected under `root` (the PhysioNet layout; `.csv` or `.csv.gz`):
  mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train / validate / test)
  mimic-cxr-2.0.0-metadata.csv   dicom_id, ..., ViewPosition (used to keep frontal PA/AP images)
  mimic-cxr-2.0.0-chexpert.csv   optional: subject_id, study_id, 14 CheXpert columns (1.0 / 0.0 / -1.0 / blank)
  files/p10/p10000032/s50414267/<dicom_id>.jpg
Reports come from MIMIC-CXR (not -JPG): `reports_dir`/files/p10/p10000032/s50414267.txt (default: root).
Studies without a report file, with an empty requested section, or whose image is missing, empty or unreadable
(`common.image_problem`) are skipped and counted; `strict=True` raises on the first one instead, naming it.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from pathlib import Path

from ..text_io import read_text
from .common import (
    CHEXPERT,
    DEFAULT_PROMPT,
    SkipCounter,
    check_section,
    compose_report,
    first_image_problem,
    parse_sections,
    row,
    to_datasets,
)

SPLITS = {"train": "train", "validate": "validation", "test": "test"}
FRONTAL = ("PA", "AP")


def _read_csv(root: Path, stem: str, required: bool = True) -> list[dict] | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        path = root / name
        if path.is_file():
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    if required:
        raise ValueError(f"{root}: {stem}.csv(.gz) not found; is this the MIMIC-CXR-JPG root?")
    return None


def _study_dir(subject: str, study: str) -> Path:
    return Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def _labels(rec: dict | None) -> dict | None:
    if rec is None:
        return None
    return {o: (int(float(rec[o])) if rec.get(o) not in (None, "") else None) for o in CHEXPERT}


def read_mimic_cxr_jpg(
    root: str | Path,
    reports_dir: str | Path | None = None,
    section: str = "findings",
    views=FRONTAL,
    max_images: int | None = 1,
    prompt: str = DEFAULT_PROMPT,
    strict: bool = False,
) -> tuple[dict[str, list[dict]], dict]:
    check_section(section)
    root = Path(root)
    reports_dir = Path(reports_dir) if reports_dir is not None else root
    split_rows = _read_csv(root, "mimic-cxr-2.0.0-split")
    view = {r["dicom_id"]: r.get("ViewPosition", "") for r in _read_csv(root, "mimic-cxr-2.0.0-metadata")}
    chexpert = {
        (r["subject_id"], r["study_id"]): r for r in (_read_csv(root, "mimic-cxr-2.0.0-chexpert", False) or [])
    }
    studies: dict[tuple, list[str]] = defaultdict(list)
    study_split: dict[tuple, str] = {}
    for r in split_rows:
        key = (r["subject_id"], r["study_id"])
        study_split[key] = SPLITS.get(r["split"], r["split"])
        if view.get(r["dicom_id"], "") in views:
            studies[key].append(r["dicom_id"])
    skips, rows = SkipCounter(str(root)), {s: [] for s in SPLITS.values()}
    for key in sorted(study_split):
        subject, study = key
        sdir = _study_dir(subject, study)
        problem, report, images = _study(root, reports_dir, sdir, studies.get(key, []), section, max_images)
        if problem:
            if strict:
                raise ValueError(f"study s{study} (subject {subject}): {problem}")
            skips.skip(problem)
            continue
        rows[study_split[key]].append(
            row(f"s{study}", images, report, prompt, _labels(chexpert.get(key)), subject_id=subject)
        )
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def _study(root: Path, reports_dir: Path, sdir: Path, dicoms: list[str], section: str, max_images):
    """(problem or None, report, image paths) of one study."""
    if not dicoms:
        return "no frontal image in metadata", "", []
    report_file = reports_dir / f"{sdir}.txt"
    if not report_file.is_file():
        return "missing report", "", []
    try:
        sections = parse_sections(read_text(report_file))
    except ValueError as error:  # not UTF-8 / UTF-16: the study is skipped and counted, or named with strict
        return str(error), "", []
    report = compose_report(sections.get("findings"), sections.get("impression"), section)
    if not sections.get("findings"):
        return "empty findings section", "", []
    paths = [root / sdir / f"{d}.jpg" for d in sorted(dicoms)][:max_images]
    bad = first_image_problem(paths)
    if bad:
        return f"{bad[0]}: {bad[1]}", "", []
    return None, report, [str(p) for p in paths]


def load_mimic_cxr_jpg(root, **kwargs):
    """DatasetDict (train/validation/test), TRL conversational format, with CheXpert labels when available."""
    import datasets

    rows, _ = read_mimic_cxr_jpg(root, **kwargs)
    return to_datasets(rows, {"subject_id": datasets.Value("string")})
