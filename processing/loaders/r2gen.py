"""R2Gen `annotation.json` (IU X-ray and MIMIC-CXR as released with R2Gen / R2GenCMN) -> TRL rows.

Format: {"train": [...], "val": [...], "test": [...]}, each record {"id", "report", "image_path": [relative
paths], "split", ...}; `report` is already the findings section. Records with an empty report or an image that is
missing, empty or unreadable (`common.image_problem`) are skipped and counted (`strict=True` raises instead, naming
the file). A file of another shape (not JSON, a list, a record that is not an object, `image_path` a single string)
is an error saying where.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import DEFAULT_PROMPT, SkipCounter, check_section, first_image_problem, row, to_datasets

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def _read_annotation(annotation: Path) -> dict:
    """The parsed file, its shape checked: {split: [record objects]}."""
    if not annotation.is_file():
        raise ValueError(f"annotation file {annotation} does not exist")
    try:
        data = json.loads(annotation.read_bytes().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{annotation}: not a UTF-8 JSON file ({e})") from None
    if not isinstance(data, dict) or not data or set(data) - set(SPLIT_NAMES):
        got = sorted(data)[:5] if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise ValueError(f"{annotation}: expected an object with top-level keys train/val/test, got {got}")
    for split, records in data.items():
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError(f"{annotation}: {split!r} must be a list of record objects")
        for rec in records:
            if not isinstance(rec.get("image_path", []), list) or not isinstance(rec.get("report") or "", str):
                raise ValueError(
                    f"{annotation}: record {rec.get('id')!r} in {split!r}: 'image_path' must be a list of paths "
                    "(a single string would be read character by character) and 'report' text"
                )
    return data


def read_r2gen(
    annotation: str | Path,
    image_dir: str | Path,
    section: str = "findings",
    max_images: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    strict: bool = False,
) -> tuple[dict[str, list[dict]], dict]:
    check_section(section)
    if section != "findings":
        raise ValueError(
            "R2Gen annotation.json holds only the findings section (`report`); use section='findings' "
            "or load MIMIC-CXR from its own report files (mimic_cxr_jpg) to get the impression"
        )
    annotation, image_dir = Path(annotation), Path(image_dir)
    data = _read_annotation(annotation)
    skips, rows = SkipCounter(str(annotation)), {}
    for split, records in data.items():
        out = rows.setdefault(SPLIT_NAMES[split], [])
        for rec in records:
            report = (rec.get("report") or "").strip()
            paths = [image_dir / p for p in rec.get("image_path", [])][:max_images]
            if not report:
                skips.skip("empty report")
                continue
            bad = first_image_problem(paths) if paths else ("missing image", "<no image_path>")
            if bad:
                if strict:
                    raise ValueError(
                        f"{annotation}: record {rec.get('id')!r}: {bad[0]}: {bad[1]}; check image_dir={image_dir}"
                    )
                skips.skip(bad[0])
                continue
            out.append(row(str(rec.get("id")), [str(p) for p in paths], report, prompt))
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def load_r2gen(annotation, image_dir, **kwargs):
    """DatasetDict (train/validation/test) in TRL conversational format. See `read_r2gen` for the options."""
    rows, _ = read_r2gen(annotation, image_dir, **kwargs)
    return to_datasets(rows)
