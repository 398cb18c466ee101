"""The phrase lists: one compiled regular expression per observation and kind (mention / anchor / unmention).

The lists are kept as text files in `phrases/` (with their provenance and licence) and read from `phrase_lists.py`,
which is generated from them (`python -m asarg.evaluation.report_labeler.phrases`, or `make metric`), because the
published `evaluate` metric carries Python modules only. `tests/evaluation/test_metric_folder.py` fails when the two
differ. `RuleLabeler(phrase_dir=...)` reads a folder laid out like `phrases/` instead.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

from .constants import FILE_TO_LABEL
from .phrase_lists import PHRASE_FILES
from .scanner import MultiScanner
from .text import normalize_phrase

PHRASE_DIR = Path(__file__).resolve().parent / "phrases"
KINDS = ("mention", "anchor", "unmention")


def read_phrase_dir(root: Path) -> dict[str, tuple[str, ...]]:
    """{"mention/edema.txt": lines} of a folder laid out like `phrases/` (the shape of `PHRASE_FILES`)."""
    return {
        f"{kind}/{path.name}": tuple(path.read_text(encoding="utf-8").splitlines())
        for kind in KINDS
        for path in sorted((root / kind).glob("*.txt"))
    }


def read_phrases(lines: tuple[str, ...]) -> list[str]:
    # Phrases go through the same normalisation as report text so that "air-space" in a list still matches.
    return [normalize_phrase(line) for line in (line.strip() for line in lines) if line and not line.startswith("#")]


def phrase_regex(phrases: list[str]) -> str:
    # Longest first so that the alternation prefers "pleural fluid" over a shorter overlapping phrase; ties by text,
    # so the pattern (and hence any tie-break) is the same in every process (set order is hash-seeded).
    ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
    return r"\b(?:" + "|".join(f"(?:{p})" for p in ordered) + ")"


@functools.cache
def load_phrase_patterns(phrase_dir: str | None = None) -> dict[str, dict[str, str]]:
    """{kind: {label: regex}} for kind in mention / anchor / unmention: the built-in lists, or `phrase_dir`'s."""
    if phrase_dir:
        if not (Path(phrase_dir) / "mention").is_dir():
            raise ValueError(f"{phrase_dir} has no mention/ folder of phrase lists.")
        files, where = read_phrase_dir(Path(phrase_dir)), str(phrase_dir)
    else:
        files, where = PHRASE_FILES, "the built-in lists"
    patterns: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for name, lines in sorted(files.items()):
        kind, _, file = name.partition("/")
        stem = file.removesuffix(".txt")
        if stem not in FILE_TO_LABEL:
            raise ValueError(
                f"Phrase file {name} of {where} is not named after a CheXpert observation ({sorted(FILE_TO_LABEL)})."
            )
        phrases = read_phrases(lines)
        if phrases:
            regex = phrase_regex(phrases)
            try:
                re.compile(regex)
            except re.error as err:
                raise ValueError(f"Phrase file {name} of {where} holds an invalid regular expression: {err}") from err
            patterns[kind][FILE_TO_LABEL[stem]] = regex
    return patterns


@functools.cache
def load_phrase_scanner(phrase_dir: str | None = None) -> MultiScanner:
    """One scanner for all phrase lists; keys are "<kind>|<label>"."""
    patterns = load_phrase_patterns(phrase_dir)
    return MultiScanner({f"{kind}|{label}": rx for kind, table in patterns.items() for label, rx in table.items()})


def phrase_module(root: Path = PHRASE_DIR) -> str:
    """The text of `phrase_lists.py`: `root`'s lists, line for line."""
    lines = [
        f'"""GENERATED from phrases/ by `python -m {__package__}.phrases`; do not edit (see phrases.py)."""',
        "",
        "PHRASE_FILES = {",
    ]
    for name, phrase_lines in read_phrase_dir(root).items():
        lines += [f"    {name!r}: (", *(f"        {line!r}," for line in phrase_lines), "    ),"]
    return "\n".join([*lines, "}", ""])


if __name__ == "__main__":  # regenerate phrase_lists.py after editing a list
    target = Path(__file__).with_name("phrase_lists.py")
    target.write_text(phrase_module(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
