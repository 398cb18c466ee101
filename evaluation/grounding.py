"""Sentence-to-anatomy grounding, one import away: the public names of its three modules.

- `asarg.evaluation.tracing`: `trace_report` (counterfactual map ablation per sentence), `split_sentences`,
  `structure_groups`, `trace_to_json`;
- `asarg.evaluation.grounded_report`: `ground_report` (labels and boxes per sentence), `to_radfact`, `segment`,
  `segment_image`, `generate_without`;
- `asarg.evaluation.grounding_score`: `score_grounding` and `match_findings` against SynthCXR's finding locations.
"""

from __future__ import annotations

from .grounded_report import (
    BOX_THRESHOLD,
    check_segmentable,
    generate_without,
    ground_report,
    segment,
    segment_image,
    segmentation_masks,
    to_radfact,
)
from .grounding_score import DEVICE_WORDS, GroundingScore, match_findings, score_grounding
from .tracing import (
    SentenceTrace,
    StructureDrop,
    check_traceable,
    resolve_structures,
    split_sentences,
    structure_groups,
    token_sentence_ids,
    trace_report,
    trace_to_json,
)

__all__ = [
    "BOX_THRESHOLD",
    "DEVICE_WORDS",
    "GroundingScore",
    "SentenceTrace",
    "StructureDrop",
    "check_segmentable",
    "check_traceable",
    "generate_without",
    "ground_report",
    "match_findings",
    "resolve_structures",
    "score_grounding",
    "segment",
    "segment_image",
    "segmentation_masks",
    "split_sentences",
    "structure_groups",
    "to_radfact",
    "token_sentence_ids",
    "trace_report",
    "trace_to_json",
]
