"""Find the matches of many patterns, overlaps included, in one pass over the text."""

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


class MultiScanner:
    """`scan(text)` -> {key: [(start, end), ...]} for every pattern, as if each had been searched on its own.

    One regex does the work: a lookahead on the union of the patterns finds each position where any of them matches,
    and one optional capturing lookahead per pattern records which ones do. That is about twice as fast as running
    the patterns one by one, and, unlike one alternation, it keeps overlapping matches of different patterns
    ("heart failure" for Edema and "heart" for Cardiomegaly). Within one key, a match that lies inside the previous
    match of the same key is dropped, as a separate `finditer` would never report it.
    """

    def __init__(self, patterns: dict[str, str]):
        for key, p in patterns.items():
            if re.compile(p).groups:
                raise ValueError(f"Pattern {key!r} has capturing groups; write them as (?:...).")
        self.keys = list(patterns)
        union = "|".join(f"(?:{p})" for p in patterns.values())
        captures = "".join(f"(?=({p}))?" for p in patterns.values())
        # A cheap guard tried first at each position: a trie of the (<= 4-character) literal prefixes that any match
        # can start with. Most positions fail it after one or two characters.
        prefixes = set().union(*(first_prefixes(p) for p in patterns.values()))
        guard = f"(?={trie_regex(prefixes)})" if "" not in prefixes else ""
        self.regex = re.compile(f"{guard}(?=(?:{union})){captures}")

    def scan(self, text: str) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        keys = self.keys
        for m in self.regex.finditer(text):
            regs = m.regs
            for i in range(1, len(regs)):
                s, e = regs[i]
                if s < 0 or s == e:
                    continue
                spans = out.setdefault(keys[i - 1], [])
                if spans and spans[-1][1] >= e:
                    continue  # inside the previous match of this key
                spans.append((s, e))
        return out
