"""Find the matches of many patterns, overlaps included, from one pass over the text that finds where they can
start."""

from __future__ import annotations

import re
from re import _constants as _const
from re import _parser


def trie_regex(literals) -> str:
    """An alternation of literal strings factored by common prefix ("pneumo(?:nia|thorax)"): Python's regex engine
    tries alternatives one by one at every position, so a trie makes a failing position cost one branch, not one per
    phrase."""
    trie: dict = {}
    for word in literals:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            body = f"(?:{body})?"
        return body

    return build(trie)


def first_prefixes(pattern: str, maxlen: int = 4) -> set[str]:
    """Every literal string (up to `maxlen` characters) that a match of `pattern` can start with; "" in the result
    means a match can start with something that is not a literal (`\\w`, `.`), so no guard is possible."""
    return {prefix for prefix, _ in _sequence_prefixes(list(_parser.parse(pattern)), maxlen)}


def _sequence_prefixes(items, maxlen: int) -> set[tuple[str, bool]]:
    # (prefix, can_grow): can_grow is False once a non-literal item or maxlen ends the prefix.
    growing, final = {""}, set()
    for op, av in items:
        if not growing:
            break
        if op in (_const.AT, _const.ASSERT, _const.ASSERT_NOT):
            continue  # zero-width
        if op is _const.LITERAL:
            ext = {(chr(av), True)}
        elif op is _const.IN and all(kind is _const.LITERAL for kind, _ in av):
            ext = {(chr(c), True) for _, c in av}
        elif op is _const.SUBPATTERN:
            ext = _sequence_prefixes(list(av[-1]), maxlen)
        elif op is _const.BRANCH:
            ext = set().union(*(_sequence_prefixes(list(b), maxlen) for b in av[1]))
        elif op in (_const.MAX_REPEAT, _const.MIN_REPEAT):
            low, high, sub = av
            ext = _sequence_prefixes(list(sub), maxlen)
            if high != 1:
                ext = {(p, False) for p, _ in ext}  # one copy, then stop: the next copy is not known
            if low == 0:
                ext.add(("", True))
        else:
            ext = {("", False)}
        grown = set()
        for head in growing:
            for tail, can_grow in ext:
                prefix = (head + tail)[:maxlen]
                (grown if can_grow and len(prefix) < maxlen else final).add(prefix)
        growing = grown
    return {(p, True) for p in growing} | {(p, False) for p in final}


def starts_at_word_edge(pattern: str) -> bool:
    """True when every match of `pattern` starts at a word boundary (`\\b`) or with a non-word character, i.e. never
    inside a word; False when that cannot be shown from the pattern's first item."""
    return _items_start_at_edge(list(_parser.parse(pattern)))


def _items_start_at_edge(items) -> bool:
    if not items:
        return False
    op, av = items[0]
    if op is _const.AT:
        return av is _const.AT_BOUNDARY
    if op is _const.LITERAL:
        return not _WORD_CHAR.match(chr(av))
    if op is _const.IN:
        return all(kind is _const.LITERAL and not _WORD_CHAR.match(chr(c)) for kind, c in av)
    if op is _const.SUBPATTERN:
        return _items_start_at_edge(list(av[-1]))  # a group that can be empty starts with a repeat: False below
    if op is _const.BRANCH:
        return all(_items_start_at_edge(list(branch)) for branch in av[1])
    return False


_WORD_CHAR = re.compile(r"\w")


class MultiScanner:
    """`scan(text)` -> {key: [(start, end), ...]} for every pattern, as if each had been searched on its own.

    Every match a pattern has is reported, overlaps included ("heart failure" for Edema and "heart" for
    Cardiomegaly), except that within one key a match that ends inside the previous match of that key is dropped (a
    separate `finditer` would never report it). Keys appear in the result in the order of their first match
    (position, then pattern order).

    Python's regex engine is slow where it has to try a pattern at every position, and fast where it can skip ahead
    to a given character. So one regex pass finds the candidate positions: those where a (<= 4-character) literal
    prefix that some pattern's matches can start with begins. When every pattern starts at a word boundary or with a
    non-word character (all phrase lists and rules do), that pass only stops at non-word characters (a space, a
    comma) and looks at the word after it, instead of trying every position. The longest prefix found at a candidate
    names the few patterns that can match there, and only those are tried, all of them in one `match` call.

    `parts` ({name: keys}) names subsets of the patterns that `scan(text, part, cands)` looks for on their own, from
    the candidates of one `candidates(text)` pass shared by all parts; part None is all patterns.
    """

    def __init__(self, patterns: dict[str, str], parts: dict[str, list[str]] | None = None):
        for key, p in patterns.items():
            if re.compile(p).groups:
                raise ValueError(f"Pattern {key!r} has capturing groups; write them as (?:...).")
        self.keys = list(patterns)
        regexes = list(patterns.values())
        prefix_sets = [first_prefixes(p) for p in regexes]
        if any("" in own for own in prefix_sets):  # a pattern can start with a non-literal: try all of them everywhere
            prefix_sets = [{""}] * len(regexes)
        prefixes = set().union(*prefix_sets)
        # The longest prefix occurring at a position names every pattern that can match there: any other prefix
        # occurring there is a prefix of that one.
        can_match = {
            s: [i for i, own in enumerate(prefix_sets) if any(s.startswith(p) for p in own)] for s in prefixes
        }
        self._at = self._prefix_tables(can_match, regexes, {None: self.keys, **(parts or {})})
        # Candidate positions. Word starts are found from the non-word character before them, which the regex engine
        # can skip to (position 0 is checked on its own); positions of a non-word character, for the patterns that
        # can start with one (",", "."), in a second pass that only a part with such patterns asks for.
        word = {s for s in prefixes if s and _WORD_CHAR.match(s)}
        other = prefixes - word
        self._edge = "" not in prefixes and all(starts_at_word_edge(p) for p in regexes)
        self._needs: dict[str | None, tuple[bool, bool]] = {}  # part -> (word candidates, other candidates)
        for part, table in self._at.items():
            self._needs[part] = (
                not self._edge or bool(word & table.keys()),
                self._edge and bool(other & table.keys()),
            )
        self._first = self._word = self._other = None
        if not self._edge:
            self._word = re.compile(f"(?=({trie_regex(prefixes)}))" if "" not in prefixes else "(?=())")
            self._word_shift = 0
            return
        self._word_shift = 1
        if word:
            self._first = re.compile(trie_regex(word)).match
            self._word = re.compile(rf"\W(?=({trie_regex(word)}))")
        if other:
            first_chars = "".join(sorted({re.escape(s[0]) for s in other}))
            self._other = re.compile(rf"[{first_chars}](?<=(?=({trie_regex(other)}))[\s\S])")

    def _prefix_tables(self, can_match, regexes, parts) -> dict[str | None, dict[str, tuple]]:
        """Per part: prefix -> (pattern indices, single pattern?, matcher), one compiled matcher per index group."""
        matchers: dict[tuple[int, ...], object] = {}
        index = {key: i for i, key in enumerate(self.keys)}
        tables = {}
        for part, keys in parts.items():
            wanted = {index[key] for key in keys}
            table = tables[part] = {}
            for s, indices in can_match.items():
                group = tuple(i for i in indices if i in wanted)
                if group:
                    if group not in matchers:
                        matchers[group] = self._matcher([regexes[i] for i in group])
                    table[s] = (group, len(group) == 1, matchers[group])
        return tables

    @staticmethod
    def _matcher(regexes: list[str]):
        if len(regexes) == 1:
            return re.compile(regexes[0]).match
        # One optional look-ahead per pattern: each captures that pattern's own match at the position, if any.
        return re.compile("".join(f"(?=({p}))?" for p in regexes)).match

    def candidates(self, text: str) -> Candidates:
        """The candidate positions of `text`, to share between `scan` calls for several parts."""
        return Candidates(self, text)

    def _word_candidates(self, text: str) -> list[tuple[int, str]]:
        if self._word is None:
            return []
        cands = []
        if self._first is not None:
            c = self._first(text)
            if c is not None:
                cands.append((0, c.group()))
        shift = self._word_shift
        cands += [(c.start() + shift, c.group(1)) for c in self._word.finditer(text)]
        return cands

    def _other_candidates(self, text: str) -> list[tuple[int, str]]:
        if self._other is None:
            return []
        return [(c.start(), c.group(1)) for c in self._other.finditer(text)]

    def scan(
        self, text: str, part: str | None = None, cands: Candidates | None = None
    ) -> dict[str, list[tuple[int, int]]]:
        """The matches of the patterns of `part` (None: all); `cands`: `candidates(text)` if already known."""
        at = self._at[part]
        if cands is None:
            cands = Candidates(self, text)
        word, other = self._needs[part]
        out: dict[str, list[tuple[int, int]]] = {}
        keys = self.keys
        for s, prefix in cands.all() if word and other else cands.word if word else cands.other():
            entry = at.get(prefix)
            if entry is None:
                continue
            group, single, match = entry
            m = match(text, s)
            if m is None:
                continue
            if single:
                e = m.end()
                if e > s:
                    spans = out.get(keys[group[0]])
                    if spans is None:
                        out[keys[group[0]]] = [(s, e)]
                    elif spans[-1][1] < e:  # else inside the previous match of this key
                        spans.append((s, e))
                continue
            regs = m.regs
            for j, i in enumerate(group, 1):
                e = regs[j][1]
                if e > s:  # (-1, -1) when the pattern does not match here
                    spans = out.get(keys[i])
                    if spans is None:
                        out[keys[i]] = [(s, e)]
                    elif spans[-1][1] < e:
                        spans.append((s, e))
        return out


class Candidates:
    """(position, longest prefix there) for every position of a text where some pattern of a `MultiScanner` can
    match, in position order: `word` (word starts, or every candidate when the scanner cannot tell word starts), and
    `other()` (positions of a non-word character, found on first use); `all()` merges both."""

    __slots__ = ("_scanner", "_text", "word", "_other", "_all")

    def __init__(self, scanner: MultiScanner, text: str):
        self._scanner, self._text = scanner, text
        self.word = scanner._word_candidates(text)
        self._other: list[tuple[int, str]] | None = None
        self._all: list[tuple[int, str]] | None = None

    def other(self) -> list[tuple[int, str]]:
        if self._other is None:
            self._other = self._scanner._other_candidates(self._text)
        return self._other

    def all(self) -> list[tuple[int, str]]:
        if self._all is None:
            other = self.other()
            # A word start is never a non-word character, so positions are unique and the sort is by position.
            self._all = sorted(self.word + other) if other else self.word
        return self._all
