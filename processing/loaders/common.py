"""Shared pieces of the loaders: the conversational row, the report-section choice and the `datasets` schema."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from asarg.evaluation.report_labeler.constants import CHEXPERT_LABELS

DEFAULT_PROMPT = "Write the findings section of the radiology report for this chest X-ray."
SECTIONS = ("findings", "findings+impression")
# The 14 observations, spelled and ordered as the CheXpert labeler writes them (one definition for the project).
CHEXPERT = CHEXPERT_LABELS

log = logging.getLogger("asarg.loaders")


def messages(report: str, prompt: str = DEFAULT_PROMPT, n_images: int = 1) -> list[dict]:
    """One user turn (image placeholders + prompt) and one assistant turn (the report), TRL's VLM format."""
    user = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": report}]}]


def row(
    id_: str, images: list[str], report: str, prompt: str = DEFAULT_PROMPT, labels: dict | None = None, **extra
) -> dict:
    return {
        "id": id_,
        "images": list(images),
        "messages": messages(report, prompt, len(images)),
        "report": report,
        "labels": {o: (None if labels is None else labels.get(o)) for o in CHEXPERT},
        **extra,
    }


def check_section(section: str) -> None:
    if section not in SECTIONS:
        raise ValueError(f"section={section!r} is not supported; use one of {SECTIONS}")


def compose_report(findings: str | None, impression: str | None, section: str) -> str:
    """The target text: the findings section, or findings followed by the impression. Empty -> ''."""
    check_section(section)
    parts = [(findings or "").strip()]
    if section == "findings+impression":
        parts.append((impression or "").strip())
    return " ".join(p for p in parts if p)


class SkipCounter:
    """Counts skipped records by reason, logs a summary, and raises when nothing usable is left."""

    def __init__(self, source: str):
        self.source, self.counts = source, Counter()

    def skip(self, reason: str) -> None:
        self.counts[reason] += 1

    def finish(self, kept: int) -> dict:
        if self.counts:
            log.warning("%s: kept %d records, skipped %s", self.source, kept, dict(self.counts))
        if kept == 0:
            raise ValueError(
                f"{self.source}: no usable records (skipped: {dict(self.counts) or 'none'}); check the "
                "paths and the report section you asked for"
            )
        return dict(self.counts)


def features(extra: dict | None = None):
    """Explicit schema: images decode lazily from paths; labels are nullable int8 (1/0/-1/None)."""
    import datasets

    text = [{"type": datasets.Value("string"), "text": datasets.Value("string")}]
    feats = {
        "id": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),
        "messages": [{"role": datasets.Value("string"), "content": text}],
        "report": datasets.Value("string"),
        "labels": {o: datasets.Value("int8") for o in CHEXPERT},
    }
    feats.update(extra or {})
    return datasets.Features(feats)


def to_datasets(rows_by_split: dict[str, list[dict]], extra_features: dict | None = None):
    """DatasetDict from rows per split; a split without rows is left out."""
    import datasets

    feats = features(extra_features)
    return datasets.DatasetDict(
        {s: datasets.Dataset.from_list(rows, features=feats) for s, rows in rows_by_split.items() if rows}
    )


_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /&-]{2,40}):", re.MULTILINE)


def parse_sections(text: str) -> dict[str, str]:
    """Split a free-text radiology report into {heading (lower case): body} on lines like 'FINDINGS:'.

    Text before the first heading is kept under '' (MIMIC-CXR reports start with a wet-read banner there).
    Whitespace inside a section is collapsed to single spaces."""
    out, marks = {}, list(_HEADING.finditer(text))
    pre = text[: marks[0].start()] if marks else text
    out[""] = " ".join(pre.split())
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1).strip().lower()] = " ".join(text[m.end() : end].split())
    return out


def check_images(paths: list[Path]) -> list[Path]:
    """The paths that do not exist (callers skip or raise on them)."""
    return [p for p in paths if not p.is_file()]
