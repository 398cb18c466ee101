"""Plain formats for hospital data -> TRL rows.

JSONL (`load_jsonl`): one study per line, paths relative to the JSONL file's folder:
  {"id": "case-001", "images": ["img/case-001.png"] (or "image": "..."), "findings": "...",
   "impression": "..." (optional), "split": "train|validation|test" (optional), "labels": {...} (optional)}
Image folder (`load_image_folder`): `<root>/[<split>/]<name>.<png|jpg|jpeg>` with the report beside it in
`<name>.txt`, either plain text (taken as the findings) or with 'FINDINGS:' / 'IMPRESSION:' headings.
Records without a report/findings text or whose image file is missing are skipped and counted; `strict=True`
raises instead.
"""

from __future__ import annotations

import json
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


def read_jsonl(
    path: str | Path,
    section: str = "findings",
    default_split: str = "train",
    prompt: str = DEFAULT_PROMPT,
    strict: bool = False,
) -> tuple[dict[str, list[dict]], dict]:
    check_section(section)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"JSONL file {path} does not exist")
    skips, rows = SkipCounter(str(path)), {s: [] for s in SPLITS}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        images = rec.get("images") or ([rec["image"]] if rec.get("image") else [])
        paths = [path.parent / p for p in images]
        report = compose_report(rec.get("findings"), rec.get("impression"), section)
        problem = (
            "empty findings"
            if not (rec.get("findings") or "").strip()
            else "no image"
            if not paths
            else "missing image"
            if any(not p.is_file() for p in paths)
            else None
        )
        if problem:
            if strict:
                raise ValueError(f"{path}:{n} (id {rec.get('id')!r}): {problem}")
            skips.skip(problem)
            continue
        split = _split(rec.get("split"), default_split, f"{path}:{n}")
        rows[split].append(
            row(str(rec.get("id", f"{path.stem}-{n}")), [str(p) for p in paths], report, prompt, rec.get("labels"))
        )
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def read_image_folder(
    root: str | Path,
    section: str = "findings",
    default_split: str = "train",
    prompt: str = DEFAULT_PROMPT,
    strict: bool = False,
) -> tuple[dict[str, list[dict]], dict]:
    check_section(section)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    skips, rows = SkipCounter(str(root)), {s: [] for s in SPLITS}
    for img in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = img.relative_to(root)
        split = _split(
            rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in SPLITS + ("val",) else None, default_split, str(img)
        )
        txt = img.with_suffix(".txt")
        problem, report = None, ""
        if not txt.is_file():
            problem = "missing report"
        else:
            sections = parse_sections(txt.read_text(encoding="utf-8", errors="replace"))
            findings = sections.get("findings", sections[""] if len(sections) == 1 else "")
            report = compose_report(findings, sections.get("impression"), section)
            problem = None if findings else "empty findings section"
        if problem:
            if strict:
                raise ValueError(f"{img}: {problem} (expected the report in {txt.name})")
            skips.skip(problem)
            continue
        rows[split].append(row(str(rel.with_suffix("")), [str(img)], report, prompt))
    return rows, skips.finish(sum(len(r) for r in rows.values()))


def load_jsonl(path, **kwargs):
    """DatasetDict in TRL conversational format from a JSONL manifest (see module docstring)."""
    rows, _ = read_jsonl(path, **kwargs)
    return to_datasets(rows)


def load_image_folder(root, **kwargs):
    """DatasetDict in TRL conversational format from images with sidecar .txt reports (see module docstring)."""
    rows, _ = read_image_folder(root, **kwargs)
    return to_datasets(rows)
