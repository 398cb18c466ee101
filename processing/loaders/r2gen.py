"""R2Gen `annotation.json` (IU X-ray and MIMIC-CXR as released with R2Gen / R2GenCMN) -> TRL rows.

Format: {"train": [...], "val": [...], "test": [...]}, each record {"id", "report", "image_path": [relative
paths], "split", ...}; `report` is already the findings section. Records with an empty report or a missing image
file are skipped and counted (`strict=True` raises instead).
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import DEFAULT_PROMPT, SkipCounter, check_images, check_section, row, to_datasets

SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


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
    if not annotation.is_file():
        raise ValueError(f"annotation file {annotation} does not exist")
    data = json.loads(annotation.read_text())
    if not isinstance(data, dict) or set(data) - set(SPLIT_NAMES):
        raise ValueError(f"{annotation}: expected top-level keys train/val/test, got {sorted(data)[:5]}")
    skips, rows = SkipCounter(str(annotation)), {}
    for split, records in data.items():
        out = rows.setdefault(SPLIT_NAMES[split], [])
        for rec in records:
            report = (rec.get("report") or "").strip()
            paths = [image_dir / p for p in rec.get("image_path", [])][:max_images]
            if not report:
                skips.skip("empty report")
                continue
            missing = check_images(paths) if paths else ["<no image_path>"]
            if missing:
                if strict:
                    raise ValueError(
                        f"{annotation}: record {rec.get('id')!r} refers to missing image(s) {missing}; "
                        f"check image_dir={image_dir}"
                    )
                skips.skip("missing image")
                continue
            out.append(row(str(rec.get("id")), [str(p) for p in paths], report, prompt))
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def load_r2gen(annotation, image_dir, **kwargs):
    """DatasetDict (train/validation/test) in TRL conversational format. See `read_r2gen` for the options."""
    rows, _ = read_r2gen(annotation, image_dir, **kwargs)
    return to_datasets(rows)
