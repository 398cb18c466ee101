"""Plain formats for hospital data -> TRL rows.

JSONL (`load_jsonl`): one study per line, paths relative to the JSONL file's folder:
  {"id": "case-001", "images": ["img/case-001.png"] (or "image": "..."), "findings": "...",
   "impression": "..." (optional), "split": "train|validation|test" (optional), "labels": {...} (optional)}
Image folder (`load_image_folder`): `<root>/[<split>/]<name>.<png|jpg|jpeg>` with the report beside it in
`<name>.txt`, either plain text (taken as the findings) or with 'FINDINGS:' / 'IMPRESSION:' headings.
Records without a report/findings text or whose image is missing, empty or unreadable (`common.image_problem`) are
skipped and counted; `strict=True` raises instead, naming the file. A manifest line of the wrong shape (not UTF-8,
not a JSON object, `images` not a list of paths, a misspelt label name) is an error naming the line. Both readers
take the options of `collect_rows` (section, default_split, prompt, strict).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..image_io import DICOM_SUFFIXES
from ..text_io import read_text
from .common import (
    DEFAULT_PROMPT,
    SkipCounter,
    check_labels,
    check_section,
    compose_report,
    first_image_problem,
    image_problem,
    parse_sections,
    row,
    to_datasets,
)

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _split(value: str | None, default: str, where: str) -> str:
    split = value or default
    if split == "val":
        split = "validation"
    if split not in SPLITS:
        raise ValueError(f"{where}: split {split!r} is not one of {SPLITS}")
    return split


def collect_rows(
    source: Path,
    records: Iterable[dict],
    section: str = "findings",
    default_split: str = "train",
    prompt: str = DEFAULT_PROMPT,
    strict: bool = False,
) -> tuple[dict[str, list[dict]], dict]:
    """Rows per split from records {where, id, images, findings, impression, split, labels, problem}: a record with
    a `problem` is skipped and counted (`strict=True` raises on it); one without a split goes to `default_split`."""
    check_section(section)
    skips, rows = SkipCounter(str(source)), {s: [] for s in SPLITS}
    for rec in records:
        if rec["problem"]:
            if strict:
                file = f": {rec['bad_file']}" if rec.get("bad_file") else ""
                raise ValueError(f"{rec['where']}: {rec['problem']}{file}")
            skips.skip(rec["problem"])
            continue
        report = compose_report(rec["findings"], rec.get("impression"), section)
        split = _split(rec.get("split"), default_split, rec["where"])
        rows[split].append(row(rec["id"], rec["images"], report, prompt, rec.get("labels")))
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def _lines(path: Path):
    """(line number, text) of the non-blank lines; a byte-order mark (Windows editors write one) is dropped."""
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{n}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save the manifest as UTF-8"
            ) from None
        if line.strip():
            yield n, line


def _parse_record(path: Path, n: int, line: str) -> dict:
    """One manifest line as a dict with `paths` (list of Path); a line of the wrong shape is an error naming it."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    if not isinstance(rec, dict):
        raise ValueError(
            f"{path}:{n}: a JSON {type(rec).__name__}, not an object; each line must be one study {{...}}"
        )
    images = rec.get("images") if rec.get("images") is not None else [rec["image"]] if rec.get("image") else []
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{path}:{n}: 'images' must be a list of path strings and 'image' one path string")
    for key in ("findings", "impression"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise ValueError(f"{path}:{n}: {key!r} must be text, got a JSON {type(rec[key]).__name__}")
    check_labels(rec.get("labels"), f"{path}:{n}")
    return {**rec, "paths": [path.parent / p for p in images]}


def _jsonl_records(path: Path):
    for n, line in _lines(path):
        rec = _parse_record(path, n, line)
        paths = rec.pop("paths")
        bad = first_image_problem(paths)
        problem = (
            "empty findings"
            if not (rec.get("findings") or "").strip()
            else "no image"
            if not paths
            else bad[0]
            if bad
            else None
        )
        yield {
            **rec,
            "bad_file": str(bad[1]) if bad and problem == bad[0] else None,
            "where": f"{path}:{n} (id {rec.get('id')!r})",
            "id": str(rec.get("id", f"{path.stem}-{n}")),
            "images": [str(p) for p in paths],
            "problem": problem,
        }


def _folder_records(root: Path):
    for img in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = img.relative_to(root)
        split = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in SPLITS + ("val",) else None
        txt = img.with_suffix(".txt")
        try:
            sections, unreadable = (parse_sections(read_text(txt)) if txt.is_file() else {}), None
        except ValueError as error:  # not UTF-8 / UTF-16: refused, as the JSONL manifest is
            sections, unreadable = {}, str(error)
        findings = sections.get("findings", sections[""] if len(sections) == 1 else "")
        problem = "missing report" if not txt.is_file() else None if findings else "empty findings section"
        problem = unreadable or problem
        problem = problem or image_problem(img)
        yield {
            "where": str(img),
            "id": str(rel.with_suffix("")),
            "images": [str(img)],
            "findings": findings,
            "impression": sections.get("impression"),
            "split": split,
            "problem": problem,
        }
    yield from _unusable_files(root)


def _unusable_files(root: Path):
    """Files a user may expect the folder loader to read, each skipped with its reason: DICOM films (the training
    loaders read PNG / JPEG) and reports without an image."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() in DICOM_SUFFIXES:
            problem = "DICOM film: the training loaders read PNG/JPEG; convert it first (asarg.processing.image_io)"
        elif path.suffix.lower() == ".txt" and not any(path.with_suffix(s).is_file() for s in IMAGE_SUFFIXES):
            problem = "report without an image (name.txt needs name.png or name.jpg beside it)"
        else:
            continue
        rel = path.relative_to(root)
        yield {"where": str(path), "id": str(rel), "images": [], "findings": "", "split": None, "problem": problem}


def read_jsonl(path: str | Path, **options) -> tuple[dict[str, list[dict]], dict]:
    """(rows per split, skip counts) from a JSONL manifest; `options` as for `collect_rows`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"JSONL file {path} does not exist")
    return collect_rows(path, _jsonl_records(path), **options)


def read_image_folder(root: str | Path, **options) -> tuple[dict[str, list[dict]], dict]:
    """(rows per split, skip counts) from images with sidecar .txt reports; `options` as for `collect_rows`."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    return collect_rows(root, _folder_records(root), **options)


def load_jsonl(path, **options):
    """DatasetDict in TRL conversational format from a JSONL manifest (see module docstring)."""
    return to_datasets(read_jsonl(path, **options)[0])


def load_image_folder(root, **options):
    """DatasetDict in TRL conversational format from images with sidecar .txt reports (see module docstring)."""
    return to_datasets(read_image_folder(root, **options)[0])
