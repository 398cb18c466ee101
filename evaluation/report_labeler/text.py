"""Report text normalisation (the CheXpert labeler's load stage, without its sentence splitter)."""

from __future__ import annotations

import re

# The patterns start with a literal character (a look-behind checks what precedes it) so that the regex engine can
# skip ahead to that character instead of trying every position; the substitutions that need a rare character only
# run when it occurs. Same results as the plain forms noted beside them.
_HYPHEN = re.compile(r"-(?<=[a-z]-)(?=[a-z])")  # (?<=[a-z])-(?=[a-z])
_SLASH = re.compile(r"(?<=[a-z])\s*/\s*(?=[a-z])")
_SPACES = re.compile(r"[ \t\r\f\v](?:[ \t\r\f\v]+|(?<=[\t\r\f\v]))")  # [ \t\r\f\v]+ less single spaces (kept as is)
_NEWLINES = re.compile(r"\s*\n\s*")
_DOTS = re.compile(r"\.\.+")  # \.{2,}
_PUNCT_SPACE = re.compile(r"([,;:])(?=\S)")
_PERIOD_SPACE = re.compile(r"\.(?<=[a-z]\.)(?=[a-z]{2,})")  # (?<=[a-z])\.(?=[a-z]{2,})
_SENTENCE_END = re.compile(r"[.?!\n](?:(?<=\n)|(?=\s|$))")  # [.?!](?=\s|$)|\n
_RARE_SPACE = ("  ", "\t", "\r", "\f", "\v")
_LETTER = re.compile(r"[^\W\d_]")  # any script's letters
_LATIN = re.compile(r"[A-Za-z]")


def normalize(text: str) -> str:
    """Lower-case; `and/or` and `X/Y` -> `or`; hyphens between letters -> spaces ("air-space" = "air space");
    `..` -> `.`; a space after `,;:` and after a period glued to the next sentence ("apex.there"); one space between
    words; line breaks kept as sentence ends."""
    t = text.lower().replace("and/or", " or ")
    if "-" in t:
        t = _HYPHEN.sub(" ", t)
    if "/" in t:
        t = _SLASH.sub(" or ", t)
    if ".." in t:
        t = _DOTS.sub(".", t)
    t = _PUNCT_SPACE.sub(r"\1 ", t)
    t = _PERIOD_SPACE.sub(". ", t)
    if any(w in t for w in _RARE_SPACE):
        t = _SPACES.sub(" ", t)
    if "\n" in t:
        t = _NEWLINES.sub("\n", t)
    return t.strip()


def normalize_phrase(phrase: str) -> str:
    """The part of `normalize` that applies to a phrase regex (the rest would break regex syntax such as `(?:`)."""
    return _HYPHEN.sub(" ", phrase.lower())


def split_sentences(text: str) -> list[str]:
    """Split normalised text after `.?!` followed by a space (not inside "1.5 cm") and at line breaks."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start : m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def is_readable(report: str) -> bool:
    """Whether the labeler can read `report`: it is blank (nothing to read: no findings), or at least half of its
    letters are the English alphabet's. The phrase lists are English, so a report in another script (Chinese,
    Cyrillic, Greek, ...) or without a single letter would silently be labelled as a report without findings."""
    if not report.strip():
        return True
    letters = len(_LETTER.findall(report))
    return letters > 0 and 2 * len(_LATIN.findall(report)) >= letters
