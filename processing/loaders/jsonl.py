"""Plain formats for hospital data -> TRL rows.

JSONL (`load_jsonl`): one study per line, paths relative to the JSONL file's folder:
  {"id": "case-001", "images": ["img/case-001.png"] (or "image": "..."), "findings": "...",
   "impression": "..." (optional), "split": "train|validation|test" (optional), "labels": {...} (optional)}
Image folder (`load_image_folder`): `<root>/[<split>/]<name>.<png|jpg|jpeg>` with the report beside it in
`<name>.txt`, either plain text (taken as the findings) or with 'FINDINGS:' / 'IMPRESSION:' headings.
Records without a report/findings text or whose image file is missing are skipped and counted; `strict=True`
raises instead. Both readers take the options of `collect_rows` (section, default_split, prompt, strict).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .common import DEFAULT_PROMPT, SkipCounter, check_section, compose_report, parse_sections, row, to_datasets

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
                raise ValueError(f"{rec['where']}: {rec['problem']}")
            skips.skip(rec["problem"])
            continue
        report = compose_report(rec["findings"], rec.get("impression"), section)
        split = _split(rec.get("split"), default_split, rec["where"])
        rows[split].append(row(rec["id"], rec["images"], report, prompt, rec.get("labels")))
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def _jsonl_records(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        paths = [path.parent / p for p in rec.get("images") or ([rec["image"]] if rec.get("image") else [])]
        problem = (
            "empty findings"
            if not (rec.get("findings") or "").strip()
            else "no image"
            if not paths
            else "missing image"
            if any(not p.is_file() for p in paths)
            else None
        )
        yield {
            **rec,
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
        sections = parse_sections(txt.read_text(encoding="utf-8", errors="replace")) if txt.is_file() else {}
        findings = sections.get("findings", sections[""] if len(sections) == 1 else "")
        problem = "missing report" if not txt.is_file() else None if findings else "empty findings section"
        yield {
            "where": str(img),
            "id": str(rel.with_suffix("")),
            "images": [str(img)],
            "findings": findings,
            "impression": sections.get("impression"),
            "split": split,
            "problem": problem,
        }


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
