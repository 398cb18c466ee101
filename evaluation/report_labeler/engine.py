"""The rule-based CheXpert-style labeler: extract mentions, classify each one, aggregate per report.

Stages as in the CheXpert labeler (Irvin et al., 2019): mentions come from phrase lists (minus unmention phrases);
each mention is classified by pre-negation uncertainty -> negation -> post-negation uncertainty -> positive; a report
value per observation aggregates its mentions (positive > uncertain > negative); No Finding is positive when no
observation other than Support Devices, and no "other finding", is positive or uncertain.

Every rule is scoped to a sentence, so a report is labelled sentence by sentence: one regex pass finds the positions
where a phrase or trigger can start (`scanner.MultiScanner`), the phrase lists and negation triggers are matched
there, and only for a sentence with a mention are the other triggers and scope breakers matched, each group when a
rule first asks for it; scopes are decided from match offsets. Sentence results are memoised (report sets repeat
sentences a lot; `cache_size=0` turns that off, and the labeler is fast enough without it).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from . import rules
from .constants import (
    CHEXPERT_LABELS,
    NEGATIVE,
    NOT_BLOCKING_NO_FINDING,
    OTHER_FINDING,
    POSITIVE,
    UNCERTAIN,
)
from .phrases import load_phrase_patterns
from .scanner import MultiScanner
from .text import normalize, split_sentences

BLANK = math.nan
_COMMA = re.compile(",")


@dataclass(frozen=True)
class Mention:
    label: str
    start: int
    end: int
    anchor: bool  # an anatomy word that needs a size qualifier ("heart size")


class _Offsets:
    """Start/end offsets of all matches of one pattern in a report, for range queries."""

    __slots__ = ("starts", "ends")

    def __init__(self, spans: list[tuple[int, int]]):
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]

    def any_start_in(self, lo: int, hi: int) -> bool:
        i = bisect_left(self.starts, lo)
        return i < len(self.starts) and self.starts[i] < hi

    def last_end_before(self, pos: int, default: int) -> int:
        i = bisect_right(self.ends, pos)
        return self.ends[i - 1] if i else default

    def first_start_from(self, pos: int, default: int) -> int:
        i = bisect_left(self.starts, pos)
        return self.starts[i] if i < len(self.starts) else default

    def spans_in(self, lo: int, hi: int):
        i = bisect_left(self.starts, lo)
        while i < len(self.starts) and self.starts[i] < hi:
            yield self.starts[i], self.ends[i]
            i += 1


_NO_MATCH = _Offsets([])

# Triggers and scope breakers, in parts that are matched in a sentence only when a rule first asks for one of them:
# negation and pre-negation uncertainty are asked for every mention (and are matched together with the phrase lists),
# hedges only for mentions not negated, the normal words, clause and short-scope breakers only for anatomy anchors,
# and the forward / backward scope breakers only when a trigger comes before / after a mention.
_TRIGGER_PARTS: dict[str, dict[str, re.Pattern[str]]] = {
    "negation": {
        "pre_unc_fwd": rules.PRE_UNCERTAINTY_FWD,
        "pre_unc_bwd": rules.PRE_UNCERTAINTY_BWD,
        "neg_fwd": rules.NEGATION_FWD,
        "neg_bwd": rules.NEGATION_BWD,
    },
    "hedge": {"unc_fwd": rules.UNCERTAINTY_FWD, "unc_bwd": rules.UNCERTAINTY_BWD, "coord": rules.COORDINATION},
    "anchor": {
        "normal_fwd": rules.NORMAL_FWD,
        "normal_bwd": rules.NORMAL_BWD,
        "short_stop": rules.SHORT_FORWARD_STOP,
        "clause_stop": rules.CLAUSE_STOP,
    },
    "fwd_stop": {"fwd_stop": rules.FORWARD_STOP},
    "bwd_stop": {"bwd_stop": rules.BACKWARD_STOP},
}
_PART_OF = {name: part for part, table in _TRIGGER_PARTS.items() for name in table}
FIRST = "first"  # the part matched for every sentence: phrase lists + negation triggers


@functools.cache
def _scanner(phrase_dir: str | None = None) -> MultiScanner:
    """One scanner for the phrase lists (keys "<kind>|<label>") and the triggers, whose candidate positions are found
    once per sentence."""
    patterns = {
        f"{kind}|{label}": rx
        for kind, table in load_phrase_patterns(phrase_dir).items()
        for label, rx in table.items()
    }
    phrase_keys = list(patterns)
    parts = {part: list(table) for part, table in _TRIGGER_PARTS.items()}
    parts[FIRST] = phrase_keys + parts["negation"]
    for table in _TRIGGER_PARTS.values():
        patterns.update({name: p.pattern for name, p in table.items()})
    return MultiScanner(patterns, parts)


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


class _Report:
    """One normalised sentence with the offsets of every trigger and scope breaker (attributes named after the keys
    of `_TRIGGER_PARTS`, matched on first use). `found` / `cands`: the sentence's `FIRST` matches / candidates, if
    already known."""

    def __init__(self, text: str, scanner: MultiScanner, found: dict | None = None, cands: list | None = None):
        self.text = text
        self._scanner = scanner
        self._cands = scanner.candidates(text) if cands is None else cands
        if "\n" in text or "?" in text or "!" in text or text.find(".") not in (-1, len(text) - 1):
            self.sentence_starts = [0] + [m.end() for m in rules.SENTENCE_END.finditer(text)]
        else:  # no sentence end, or a period at the very end only
            self.sentence_starts = [0, len(text)] if text.endswith(".") else [0]
        # sentence(pos) for pos before the second sentence start, the common case of a one-sentence text.
        self._first_end = self.sentence_starts[1] if len(self.sentence_starts) > 1 else len(text)
        self._second_start = self.sentence_starts[1] if len(self.sentence_starts) > 1 else sys.maxsize
        self.commas = [m.start() for m in _COMMA.finditer(text)] if "," in text else []
        if found is None:
            found = scanner.scan(text, FIRST, self._cands)
        self._set("negation", found)

    def _set(self, part: str, found: dict) -> None:
        attrs = self.__dict__
        for key in _TRIGGER_PARTS[part]:
            spans = found.get(key)
            attrs[key] = _NO_MATCH if spans is None else _Offsets(spans)

    def __getattr__(self, name: str) -> _Offsets:
        part = _PART_OF.get(name)
        if part is None:
            raise AttributeError(name)
        self._set(part, self._scanner.scan(self.text, part, self._cands))
        return self.__dict__[name]

    def sentence(self, pos: int) -> tuple[int, int]:
        if pos < self._second_start:
            return 0, self._first_end
        i = bisect_right(self.sentence_starts, pos) - 1
        end = self.sentence_starts[i + 1] if i + 1 < len(self.sentence_starts) else len(self.text)
        return self.sentence_starts[i], end

    def clause(self, start: int, end: int) -> tuple[int, int]:
        a, b = self.sentence(start)
        return max(a, self.clause_stop.last_end_before(start, a)), min(b, self.clause_stop.first_start_from(end, b))

    # --- scopes
    def forward(self, triggers: _Offsets, start: int, short: bool = False) -> bool:
        """A trigger before `start` in the same sentence whose scope reaches the mention."""
        if not triggers.starts or triggers.starts[0] >= start:
            return False
        a, _ = self.sentence(start)
        for _ts, te in triggers.spans_in(a, start):
            if te > start or self.fwd_stop.any_start_in(te, start):
                continue
            if short and self.short_stop.any_start_in(te, start):
                continue
            return True
        return False

    def backward(self, triggers: _Offsets, end: int) -> bool:
        """A trigger after `end` in the same sentence that closes the mention's noun phrase."""
        if not triggers.starts or triggers.starts[-1] < end:
            return False
        _, b = self.sentence(max(end - 1, 0))
        for ts, _te in triggers.spans_in(end, b):
            if self._noun_phrase_reaches(end, ts):
                return True
        return False

    def _noun_phrase_reaches(self, end: int, ts: int) -> bool:
        if self.bwd_stop.any_start_in(end, ts):
            return False
        between = self.text[end:ts]
        if rules.CONJUNCTION.search(between) and rules.SINGULAR_COPULA.match(self.text, ts):
            return False  # "cardiomegaly and the effusion is not seen": the verb agrees with the last noun only
        i = bisect_left(self.commas, end)
        if i < len(self.commas) and self.commas[i] < ts:
            last = self.commas[bisect_left(self.commas, ts) - 1]
            # Cross commas only inside a list closed by and/or: "the heart, vessels and mediastinum are normal".
            return bool(rules.CONJUNCTION.search(self.text, last, ts))
        return True

    def coordinated(self, start: int, end: int) -> bool:
        """The mention is a member of "X or Y" / "X versus Y" (not a laterality pair like "right or left")."""
        if not self.coord.starts:
            return False
        a, b = self.sentence(start)
        t = self.text
        for cs, ce in self.coord.spans_in(a, b):
            if cs >= end:
                gap = t[end:cs]
            elif ce <= start:
                gap = t[ce:start]
            else:
                continue
            if len(gap.split()) > 3 or rules.CLAUSE_STOP.search(gap):
                continue
            before, after = t[a:cs].split()[-1:], t[ce:b].split()[:1]
            if before and after and rules.LATERALITY.fullmatch(before[0]) and rules.LATERALITY.fullmatch(after[0]):
                continue
            return True
        return False


class RuleLabeler:
    """Rule-based CheXpert-style labeler (`labeler="chexpert-rules"`).

    `label(report)` returns {observation: 1.0 | 0.0 | -1.0 | nan} for the 14 CheXpert observations; `label_many`
    returns an (N, 14) float array in `CHEXPERT_LABELS` order (nan = blank = not mentioned).
    """

    name = "chexpert-rules"

    def __init__(self, phrase_dir: str | None = None, cache_size: int = 100_000):
        self._scanner = _scanner(phrase_dir)
        # phrase key -> (label, is an anchor, keys whose matches cancel it)
        self._mention_keys: dict[str, tuple[str, bool, tuple[str, ...]]] = {}
        for key in self._scanner.keys:
            kind, _, label = key.partition("|")
            if kind in ("mention", "anchor"):
                # "enlarged cardiac silhouette" is already a direct mention, not an anchor as well
                blocking = (f"unmention|{label}", f"mention|{label}") if kind == "anchor" else (f"unmention|{label}",)
                self._mention_keys[key] = (label, kind == "anchor", blocking)
        # Every rule is scoped to a sentence, so sentence results can be memoised: report sets repeat sentences
        # ("No pneumothorax or pleural effusion.") very often. 0 disables the cache.
        self.cache_size = cache_size
        self._cache: dict[str, list[tuple[str, float]]] = {}

    # --- public API
    def label(self, report: str) -> dict[str, float]:
        return dict(zip(CHEXPERT_LABELS, self.label_values(report), strict=True))

    def label_many(self, reports) -> list[list[float]]:
        return [self.label_values(r) for r in reports]

    def label_values(self, report: str) -> list[float]:
        """Values in `CHEXPERT_LABELS` order. As in the reference labeler, text that mentions nothing (also empty or
        non-English text) is No Finding."""
        if not isinstance(report, str):
            raise ValueError(f"A report must be a string, got {type(report).__name__}: {report!r:.60}.")
        found: dict[str, list[float]] = {}
        for sentence in split_sentences(normalize(report)):
            for label, value in self._sentence_values(sentence):
                found.setdefault(label, []).append(value)
        return _aggregate(found)

    def _sentence_values(self, sentence: str) -> list[tuple[str, float]]:
        cached = self._cache.get(sentence)
        if cached is not None:
            return cached
        values: list[tuple[str, float]] = []
        cands = self._scanner.candidates(sentence)
        found = self._scanner.scan(sentence, FIRST, cands)
        mentions = self._mentions(found)
        if mentions:
            doc = _Report(sentence, self._scanner, found, cands)
            for m in mentions:
                value = self.classify(doc, m)
                if value is None:
                    continue
                values.append((m.label, value))
                if (
                    m.label == "Edema"
                    and value != NEGATIVE
                    and rules.HEART_FAILURE.fullmatch(sentence, m.start, m.end)
                ):
                    values.append(("Cardiomegaly", UNCERTAIN))  # CheXpert: CHF also implies uncertain cardiomegaly
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[sentence] = values
        return values

    # --- stages
    def mentions(self, text: str) -> list[Mention]:
        return self._mentions(self._scanner.scan(text, FIRST))

    def _mentions(self, found: dict[str, list[tuple[int, int]]]) -> list[Mention]:
        out: list[Mention] = []
        mention_keys = self._mention_keys
        for key, spans in found.items():
            info = mention_keys.get(key)
            if info is None:  # an unmention phrase or a trigger
                continue
            label, anchor, blocking = info
            blocked = [span for k in blocking for span in found.get(k, ())]
            out += [Mention(label, s, e, anchor) for s, e in spans if not _overlaps(s, e, blocked)]
        return out

    def classify(self, doc: _Report, m: Mention) -> float | None:
        return self.classify_with_rule(doc, m)[0]

    def classify_with_rule(self, doc: _Report, m: Mention) -> tuple[float | None, str]:
        """(value, name of the rule family that decided it)."""
        s, e = m.start, m.end
        if doc.forward(doc.pre_unc_fwd, s) or doc.backward(doc.pre_unc_bwd, e):
            return UNCERTAIN, "pre-negation uncertainty"
        if doc.forward(doc.neg_fwd, s):
            return NEGATIVE, "negation"
        if doc.backward(doc.neg_bwd, e):
            return NEGATIVE, "post-negation"
        if m.anchor:
            return self._classify_anchor(doc, m)
        if doc.forward(doc.unc_fwd, s) or doc.backward(doc.unc_bwd, e):
            return UNCERTAIN, "hedge"
        if doc.coordinated(s, e):
            return UNCERTAIN, "differential (or/versus)"
        if rules.ALWAYS_UNCERTAIN.fullmatch(doc.text, s, e):
            return UNCERTAIN, "uncertain phrase"
        return POSITIVE, "mention"

    def _classify_anchor(self, doc: _Report, m: Mention) -> tuple[float | None, str]:
        s, e = m.start, m.end
        if doc.forward(doc.normal_fwd, s, short=True) or doc.backward(doc.normal_bwd, e):
            return NEGATIVE, "normal anatomy"
        a, b = doc.clause(s, e)
        text = doc.text
        qualifier = None
        for q in rules.SIZE_QUALIFIER[m.label].finditer(text, a, b):
            if not (s <= q.start() < e):
                qualifier = q
                break
        if qualifier is None:
            if rules.BORDERLINE_QUALIFIER.search(text, a, b):
                return UNCERTAIN, "borderline size"
            return None, "anatomy without qualifier"
        lo, hi = min(s, qualifier.start()), max(e, qualifier.end())
        if doc.forward(doc.unc_fwd, lo) or doc.unc_fwd.any_start_in(lo, hi) or doc.backward(doc.unc_bwd, hi):
            return UNCERTAIN, "hedge"
        if rules.BORDERLINE_QUALIFIER.search(text, a, b):
            return UNCERTAIN, "borderline size"
        return POSITIVE, "anatomy with size qualifier"

    def explain(self, report: str) -> list[dict]:
        """Every mention with its value and deciding rule, for debugging a label."""
        text = normalize(report)
        doc = _Report(text, self._scanner)
        out = []
        for m in self.mentions(text):
            value, rule = self.classify_with_rule(doc, m)
            out.append(
                {"label": m.label, "phrase": text[m.start : m.end], "start": m.start, "value": value, "rule": rule}
            )
        return sorted(out, key=lambda d: d["start"])


def _aggregate(found: dict[str, list[float]]) -> list[float]:
    values: dict[str, float] = {}
    for label, vals in found.items():
        # CheXpert: positive wins; uncertain beats negative ("no large effusion; small effusion possible").
        values[label] = POSITIVE if POSITIVE in vals else UNCERTAIN if UNCERTAIN in vals else NEGATIVE
    blocking = any(v != NEGATIVE for k, v in values.items() if k not in NOT_BLOCKING_NO_FINDING)
    values["No Finding"] = BLANK if blocking else POSITIVE
    values.pop(OTHER_FINDING, None)
    return [values.get(name, BLANK) for name in CHEXPERT_LABELS]
