"""Report text normalisation (the CheXpert labeler's load stage, without its sentence splitter)."""

from __future__ import annotations

import re
import unicodedata

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


# Invisible characters that split a word without showing: zero-width space / joiners, word joiner, BOM, soft hyphen.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
# Letters of other scripts that look like Latin ones ("cardiomegаly" with a Cyrillic а). They are mapped only inside a
# word that also has Latin letters, so a report written in Cyrillic or Greek stays what it is (and unreadable).
_CONFUSABLE = str.maketrans(
    "аеорсухіјѕԁӏАВЕКМНОРСТХІЈЅοαρνικτυχΑΒΕΗΙΚΜΝΟΡΤΥΧΖ",
    "aeopcyxijsdlABEKMHOPCTXIJSoapvikTuxABEHIKMNOPTYXZ",
)
_WORD = re.compile(r"[^\W\d_]+")
_NONE_AFTER_COLON = re.compile(
    r"(?P<pre>^|[.;\n]\s*)(?P<what>[a-z][a-z ]*?)\s*:\s*(?:none|absent|negative|not seen|not present)\b", re.MULTILINE
)


def clean(text: str) -> str:
    """Text as a reader sees it: NFKC (ligatures such as "ﬀ" become "ff", full-width letters plain), invisible
    characters removed, and look-alike letters of other scripts mapped to Latin inside words that mix them."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    if text.isascii():
        return text
    return _WORD.sub(lambda m: _mixed(m.group(0)), text)


def _mixed(word: str) -> str:
    if word.isascii() or not _LATIN.search(word):
        return word
    return word.translate(_CONFUSABLE)


def normalize(text: str) -> str:
    """`clean`, then lower-case; "X: none" (or absent, negative, not seen) -> "no X"; `and/or` and `X/Y` -> `or`; hyphens between letters -> spaces ("air-space" = "air space");
    `..` -> `.`; a space after `,;:` and after a period glued to the next sentence ("apex.there"); one space between
    words; line breaks kept as sentence ends."""
    t = clean(text).lower().replace("and/or", " or ")
    if ":" in t:
        t = _NONE_AFTER_COLON.sub(r"\g<pre>no \g<what>", t)
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
    report = clean(report)
    letters = len(_LETTER.findall(report))
    return letters > 0 and 2 * len(_LATIN.findall(report)) >= letters
