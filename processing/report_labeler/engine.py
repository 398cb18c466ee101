"""The rule-based CheXpert-style labeler: extract mentions, classify each one, aggregate per report.

Stages as in the CheXpert labeler (Irvin et al., 2019): mentions come from phrase lists (minus unmention phrases);
each mention is classified by pre-negation uncertainty -> negation -> post-negation uncertainty -> positive; a report
value per observation aggregates its mentions (positive > uncertain > negative); No Finding is positive when no
observation other than Support Devices, and no "other finding", is positive or uncertain.

Every rule is scoped to a sentence, so a report is labelled sentence by sentence: one regex pass finds all mentions of
a sentence, one more (only for sentences with a mention) all triggers and scope breakers, and scopes are decided from
match offsets. Sentence results are memoised (report sets repeat sentences a lot).
"""

from __future__ import annotations

import math
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
from .phrases import load_phrase_scanner
from .scanner import MultiScanner
from .text import normalize, split_sentences

BLANK = math.nan


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


_TRIGGERS = MultiScanner(
    {
        name: p.pattern
        for name, p in {
            "pre_unc_fwd": rules.PRE_UNCERTAINTY_FWD,
            "pre_unc_bwd": rules.PRE_UNCERTAINTY_BWD,
            "neg_fwd": rules.NEGATION_FWD,
            "neg_bwd": rules.NEGATION_BWD,
            "normal_fwd": rules.NORMAL_FWD,
            "normal_bwd": rules.NORMAL_BWD,
            "unc_fwd": rules.UNCERTAINTY_FWD,
            "unc_bwd": rules.UNCERTAINTY_BWD,
            "coord": rules.COORDINATION,
            "fwd_stop": rules.FORWARD_STOP,
            "short_stop": rules.SHORT_FORWARD_STOP,
            "bwd_stop": rules.BACKWARD_STOP,
            "clause_stop": rules.CLAUSE_STOP,
        }.items()
    }
)


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


class _Report:
    """One normalised sentence with the offsets of every trigger and scope breaker."""

    def __init__(self, text: str):
        self.text = text
        self.sentence_starts = [0] + [m.end() for m in rules.SENTENCE_END.finditer(text)]
        found = _TRIGGERS.scan(text)
        for name in _TRIGGERS.keys:
            setattr(self, name, _Offsets(found.get(name, [])))
        self.commas = [i for i, ch in enumerate(text) if ch == ","]

    def sentence(self, pos: int) -> tuple[int, int]:
        i = bisect_right(self.sentence_starts, pos) - 1
        end = self.sentence_starts[i + 1] if i + 1 < len(self.sentence_starts) else len(self.text)
        return self.sentence_starts[i], end

    def clause(self, start: int, end: int) -> tuple[int, int]:
        a, b = self.sentence(start)
        return max(a, self.clause_stop.last_end_before(start, a)), min(b, self.clause_stop.first_start_from(end, b))

    # --- scopes
    def forward(self, triggers: _Offsets, start: int, short: bool = False) -> bool:
        """A trigger before `start` in the same sentence whose scope reaches the mention."""
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
        self._phrases = load_phrase_scanner(phrase_dir)
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
        mentions = self.mentions(sentence)
        if mentions:
            doc = _Report(sentence)
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
        found = self._phrases.scan(text)
        if not found:
            return []
        out: list[Mention] = []
        for key, spans in found.items():
            kind, label = key.split("|")
            if kind == "unmention":
                continue
            blocked = found.get(f"unmention|{label}", [])
            if kind == "anchor":  # "enlarged cardiac silhouette" is already a direct mention
                blocked = blocked + found.get(f"mention|{label}", [])
            out += [Mention(label, s, e, kind == "anchor") for s, e in spans if not _overlaps(s, e, blocked)]
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
        doc = _Report(text)
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
