"""Shared pieces of the loaders: the conversational row, the report-section choice and the `datasets` schema."""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from pathlib import Path

from asarg.evaluation.report_labeler.constants import CHEXPERT_LABELS
from asarg.evaluation.report_labeler.text import clean

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
    """One training record. The report is trained on as a reader sees it (`report_labeler.text.clean`: NFKC,
    invisible characters removed, look-alike letters in Latin words mapped), as the CE labeler reads it."""
    report = clean(report)
    return {
        "id": id_,
        "images": list(images),
        "messages": messages(report, prompt, len(images)),
        "report": report,
        "labels": {o: (None if labels is None else labels.get(o)) for o in CHEXPERT},
        **extra,
    }


def check_labels(labels, where: str) -> None:
    """Labels given with a record: {CheXpert observation: 1 / 0 / -1 / null}. A misspelt name would otherwise be
    dropped without a word (the row keeps the 14 names only), so it is an error with the closest name."""
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise ValueError(
            f"{where}: 'labels' must be an object {{observation: 1/0/-1/null}}, got {type(labels).__name__}"
        )
    for name, value in labels.items():
        if name not in CHEXPERT:
            close = difflib.get_close_matches(str(name), CHEXPERT, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the names are {', '.join(CHEXPERT)}"
            raise ValueError(f"{where}: label {name!r} is not a CheXpert observation{hint}")
        if value is not None and (isinstance(value, bool) or value not in (1, 0, -1)):
            raise ValueError(f"{where}: label {name!r} is {value!r}; use 1 (positive), 0, -1 (uncertain) or null")


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

    def skip(self, problem: str) -> None:
        # Counted by kind: 'corrupt image (OSError)' and 'not an image: a/b.png' count as 'corrupt image' and
        # 'not an image'.
        self.counts[re.split(r" \(|: ", problem, maxsplit=1)[0]] += 1

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


# A JPEG ends with the end-of-image marker; inside the entropy-coded data 0xFF is always followed by 0x00 or a restart
# marker, so FF D9 in the last bytes means the file was not cut off (some writers pad a little after it).
_JPEG_END, _JPEG_TAIL = b"\xff\xd9", 4096


def image_problem(path: str | Path) -> str | None:
    """Why an image file cannot be trained on (None: it can), checked cheaply before the first step so that a bad
    file is skipped and counted here instead of crashing the run mid-epoch inside `datasets`' decoder.

    Checked: the file exists and is not empty; Pillow identifies it and `verify()` passes (for PNG this walks every
    chunk and checks its CRC, so a cut-off or bit-flipped PNG fails); a JPEG has its end-of-image marker near the
    end (if not, it is decoded in full to decide, which only odd files pay for). No pixel is decoded otherwise:
    about 0.1 ms per JPEG and 1-2 ms per multi-megabyte PNG."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing image"
    except OSError as e:
        return f"unreadable image ({e.strerror})"
    if not path.is_file():
        return "missing image"
    if size == 0:
        return "empty image file"
    try:
        with Image.open(path) as im:
            im.verify()
            kind = im.format
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as e:  # Pillow raises SyntaxError for broken chunk structure
        return f"corrupt image ({type(e).__name__})"
    if kind == "JPEG" and not _jpeg_complete(path, size):
        return "truncated image"
    return None


def _jpeg_complete(path: Path, size: int) -> bool:
    from PIL import Image

    with path.open("rb") as f:
        f.seek(max(0, size - _JPEG_TAIL))
        if _JPEG_END in f.read():
            return True
    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return False
    return True


def first_image_problem(paths: list[Path]) -> tuple[str, Path] | None:
    """(problem, path) of the first unusable image of a record (see `image_problem`), or None."""
    for p in paths:
        problem = image_problem(p)
        if problem:
            return problem, p
    return None
