"""Load the phrase lists in `phrases/` into one compiled regular expression per observation."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from .constants import FILE_TO_LABEL
from .scanner import MultiScanner
from .text import normalize_phrase

PHRASE_DIR = Path(__file__).resolve().parent / "phrases"
KINDS = ("mention", "anchor", "unmention")


def read_phrases(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    # Phrases go through the same normalisation as report text so that "air-space" in a list still matches.
    return [normalize_phrase(line) for line in lines if line and not line.startswith("#")]


def phrase_regex(phrases: list[str]) -> str:
    # Longest first so that the alternation prefers "pleural fluid" over a shorter overlapping phrase; ties by text,
    # so the pattern (and hence any tie-break) is the same in every process (set order is hash-seeded).
    ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
    return r"\b(?:" + "|".join(f"(?:{p})" for p in ordered) + ")"


@functools.cache
def load_phrase_patterns(phrase_dir: str | None = None) -> dict[str, dict[str, str]]:
    """{kind: {label: regex}} for kind in mention / anchor / unmention."""
    root = Path(phrase_dir) if phrase_dir else PHRASE_DIR
    if not (root / "mention").is_dir():
        raise ValueError(f"{root} has no mention/ folder of phrase lists.")
    patterns: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        patterns[kind] = {}
        for path in sorted((root / kind).glob("*.txt")):
            if path.stem not in FILE_TO_LABEL:
                raise ValueError(
                    f"Phrase file {path} is not named after a CheXpert observation ({sorted(FILE_TO_LABEL)})."
                )
            phrases = read_phrases(path)
            if phrases:
                regex = phrase_regex(phrases)
                try:
                    re.compile(regex)
                except re.error as err:
                    raise ValueError(f"Phrase file {path} holds an invalid regular expression: {err}") from err
                patterns[kind][FILE_TO_LABEL[path.stem]] = regex
    return patterns


@functools.cache
def load_phrase_scanner(phrase_dir: str | None = None) -> MultiScanner:
    """One scanner for all phrase lists; keys are "<kind>|<label>"."""
    patterns = load_phrase_patterns(phrase_dir)
    return MultiScanner({f"{kind}|{label}": rx for kind, table in patterns.items() for label, rx in table.items()})
