"""Scoring sentence-to-anatomy rankings against SynthCXR's known finding locations (hit@k, MRR, and what a random
ranking would score). With an untrained or tiny model the rankings are meaningless; they mean something only for a
model trained with segmentation maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .tracing import SentenceTrace

# ----------------------------------------------------------------------------------------------------------------------
# Scoring against SynthCXR finding locations
# ----------------------------------------------------------------------------------------------------------------------

# Several device findings share the one CheXpert observation "Support Devices"; the generator's own words for each
# kind (processing/synthcxr/report.py) tell them apart.
DEVICE_WORDS = {
    "ett": ("endotracheal", "et tube"),
    "ng_tube": ("enteric", "nasogastric"),
    "cvc": ("central venous", "line tip"),
    "picc": ("picc",),
    "pacemaker": ("pacemaker", "pacer"),
}


def match_findings(sentence: str, findings: Sequence[Mapping], labeler=None) -> list[int]:
    """Indices of the manifest findings a sentence asserts.

    The rule labeler reads the sentence; a finding matches when one of its observations is labelled positive or
    uncertain there (a negated "No pneumothorax." matches nothing). Device sentences are told apart by the device's
    words. A sentence may match several findings (e.g. two opacities): it is then scored against the union of
    their locations.
    """
    if labeler is None:
        from .report_labeler import RuleLabeler

        labeler = RuleLabeler()
    labels = labeler.label(sentence)
    asserted = {o for o, v in labels.items() if o != "No Finding" and v in (1, -1)}
    lower = sentence.lower()
    hits = []
    for i, finding in enumerate(findings):
        if not asserted & set(finding.get("observations", {})):
            continue
        words = DEVICE_WORDS.get(finding.get("kind"))
        if words is not None and not any(w in lower for w in words):
            continue
        hits.append(i)
    return hits


def _expand(name: str, members: Mapping[str, Sequence[str]]) -> set[str]:
    return {name, *members.get(name, ())}


def _chance(n: int, relevant: int, ks: Sequence[int]) -> tuple[dict, float]:
    """Expected hit@k and reciprocal rank of the first relevant item when n items are ranked uniformly at random."""
    hits = {k: 1 - math.comb(n - relevant, k) / math.comb(n, k) if k <= n else 1.0 for k in ks}
    rr = sum(math.comb(n - r, relevant - 1) / math.comb(n, relevant) / r for r in range(1, n - relevant + 2))
    return hits, rr


@dataclass
class GroundingScore:
    n_sentences: int  # sentences that assert a finding whose location has a traced structure
    hit_at: dict  # k -> fraction with a location structure among the top k
    mrr: float
    chance_hit_at: dict  # k -> expected hit@k of a random ranking (same sentences, same structures)
    chance_mrr: float
    n_unscorable: int = 0  # sentences matched to findings, but no traced structure lies in their location
    cases: list = field(default_factory=list)  # per sentence: text, target structures, rank of the first hit

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "cases"} | {"cases": self.cases}


def score_grounding(
    traces,
    finding_locations,
    ks: Sequence[int] = (1, 3),
    structure_members: Mapping[str, Sequence[str]] | None = None,
    labeler=None,
) -> GroundingScore:
    """hit@k and MRR of the traced rankings against known finding locations.

    traces / finding_locations: one study (list[SentenceTrace], its manifest `findings` list: dicts with
    `observations`, `kind`, `location` = CXAS names) or several (a list of those lists, study by study).
    A ranked structure is relevant when its name, or any member of it in `structure_members` (group name -> CXAS
    names; default CXAS_ANATOMY_GROUPS), is in the sentence's location set. Only sentences matched to a finding
    (`match_findings`) count; the rank is that of the first relevant structure.
    """
    if structure_members is None:
        from modeling_asarg import CXAS_ANATOMY_GROUPS as structure_members
    studies = list(zip(*_as_studies(traces, finding_locations)))
    ks = tuple(ks)
    cases, unscorable = [], 0
    for study_traces, findings in studies:
        for trace in study_traces:
            matched = match_findings(trace.text, findings, labeler)
            if not matched:
                continue
            target = {loc for i in matched for loc in findings[i].get("location", ())}
            relevant = [bool(_expand(s.name, structure_members) & target) for s in trace.ranking]
            if not any(relevant):
                unscorable += 1
                continue
            cases.append(
                {
                    "text": trace.text,
                    "findings": matched,
                    "rank": relevant.index(True) + 1,
                    "n": len(relevant),
                    "relevant": sum(relevant),
                }
            )
    return _aggregate(cases, ks, unscorable)


def _as_studies(traces, findings) -> tuple[list, list]:
    nested = bool(traces) and not isinstance(traces[0], SentenceTrace)
    traces, findings = (list(traces), list(findings)) if nested else ([traces], [findings])
    if len(traces) != len(findings):
        raise ValueError(f"Got traces for {len(traces)} studies but findings for {len(findings)}.")
    return traces, findings


def _aggregate(cases: list[dict], ks: tuple[int, ...], unscorable: int) -> GroundingScore:
    n = len(cases)
    if not n:
        nan = float("nan")
        return GroundingScore(0, {k: nan for k in ks}, nan, {k: nan for k in ks}, nan, unscorable, [])
    chance = [_chance(c["n"], c["relevant"], ks) for c in cases]
    return GroundingScore(
        n_sentences=n,
        hit_at={k: sum(c["rank"] <= k for c in cases) / n for k in ks},
        mrr=sum(1 / c["rank"] for c in cases) / n,
        chance_hit_at={k: sum(h[k] for h, _ in chance) / n for k in ks},
        chance_mrr=sum(rr for _, rr in chance) / n,
        n_unscorable=unscorable,
        cases=cases,
    )
