"""Trace report sentences to anatomy: through the finding tokens' classifier, or by counterfactual map ablation.

For one image and one report (generated or given), `trace_report` ranks anatomical structures for every sentence.

**`finding`** (the default for a model with finding tokens, `config.finding_tokens`): the language model writes a
finding from its finding token, the verdict of a classifier that pools the image tokens with one attention query per
finding. A sentence is traced to that finding (its first positive CheXpert observation; with sided finding tokens,
the side whose verdict is higher, so the film, not the sentence's side word, says which lung) and a structure scores
its share of that query's attention over the patches. On the tracing benchmarks (docs/results.md) it points into the
finding far more often than the removal methods below (pointing-game hit@1 0.59-0.63 against 0.08-0.24), at one
forward per report; like them it is still below a prior that reads the sentence, and near chance on side and swap.

**`maps`** (the default otherwise): teacher-force prompt + report and measure, for every sentence, how much the
sentence's log-likelihood drops when one anatomical structure's segmentation map (or a group of maps) is removed:

    drop(sentence, structure) = sum over the sentence's tokens of  log p_full(token) - log p_ablated(token)

Removing a map = setting its channel to zero. That is what the model was built to treat as "no map": a binary mask
of a structure that is absent is all zeros, and missing or ablated maps have always been zero channels, so the
counterfactual input is one the model can read, not an out-of-distribution value. Only the map channels are ablated;
segmenter features (if the model reads them) stay as they are. The vision tower and the segmenter run once per
trace; each ablated row costs one projector and language-model pass (the projected image tokens go in through
`mm_encoder_outputs`, the seam `generate` uses when it pre-encodes images).

The grounded report built on it is `asarg.evaluation.grounded_report`; its scoring on SynthCXR,
`asarg.evaluation.grounding_score`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

from asarg.evaluation.report_labeler import CHEXPERT_LABELS, RuleLabeler
from asarg.evaluation.report_labeler.findings import finding_names
from asarg.processing.inference import prompt_text
from asarg.processing.loaders.common import DEFAULT_PROMPT, messages

# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


class StructureDrop(NamedTuple):
    name: str
    drop: float  # log-likelihood drop of the sentence, summed over its tokens (nats)
    normalised_drop: float  # the same, divided by the sentence's token count


@dataclass
class SentenceTrace:
    text: str
    span: tuple[int, int]  # character span in the report
    log_likelihood: float  # with every map present (sum over the sentence's tokens, nats)
    n_tokens: int
    ranking: list[StructureDrop] = field(default_factory=list)  # largest drop (or attention share) first
    method: str = "maps"  # how `ranking` was scored (`TRACING_METHODS`)
    finding: str | None = None  # `finding`: the finding token traced, e.g. "Pleural Effusion (left)"
    confidence: float | None = None  # `finding`: how present that token says it is (0.5 at its threshold)

    @property
    def top(self) -> str | None:
        return self.ranking[0].name if self.ranking else None


# ----------------------------------------------------------------------------------------------------------------------
# Sentences and tokens
# ----------------------------------------------------------------------------------------------------------------------

# A sentence ends at . ! ? followed by whitespace (so "2.5 cm" stays whole) or at a line break or the end.
_SENTENCE = re.compile(r"\S[^\n]*?(?:[.!?]+(?=\s|$)|(?=\n)|\Z)")


def split_sentences(report: str) -> list[tuple[str, tuple[int, int]]]:
    """[(sentence, (start, end))] with report[start:end] == sentence; surrounding whitespace is not included."""
    out = []
    for match in _SENTENCE.finditer(report):
        text = match.group().rstrip()
        if text:
            out.append((text, (match.start(), match.start() + len(text))))
    return out


def token_sentence_ids(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """For each token (character offsets), the index of the sentence that holds it, or -1.

    A token belongs to the sentence holding its last character: byte-level BPE glues the space before a word to the
    word (" heart"), so the first character of a sentence's first token is often the space between sentences.
    Special tokens (empty offsets) and whitespace-only tokens between sentences belong to none.
    """
    ids = []
    for start, end in offsets:
        last = end - 1
        ids.append(next((i for i, (s, e) in enumerate(spans) if end > start and s <= last < e), -1))
    return ids


def _chat_text(processor, prompt: str, report: str) -> tuple[str, int]:
    """The full teacher-forcing text and the character offset of the report in it."""
    full = processor.apply_chat_template(messages(report, prompt))
    prefix = prompt_text(processor, prompt)
    common = 0
    while common < min(len(prefix), len(full)) and prefix[common] == full[common]:
        common += 1
    start = full.find(report, common)
    if start < 0:
        raise ValueError("The chat template does not contain the report verbatim; cannot locate its tokens.")
    return full, start


def _report_token_positions(processor, full: str, report_start: int, input_ids: torch.Tensor, spans) -> dict:
    """Positions (in the processor's input_ids) of the report's tokens, and the sentence of each.

    Offsets come from the fast tokenizer on the text before the processor expands `<image>` into one token per
    patch. Everything after the last image token is tokenized identically in both (special tokens split the text),
    so positions there differ by a constant shift; that is checked, not assumed.
    """
    tokenizer = processor.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("trace_report needs a fast tokenizer (offset mapping) to map tokens to sentences.")
    plain = tokenizer(full, return_offsets_mapping=True)
    plain_ids, offsets = plain["input_ids"], plain["offset_mapping"]
    ids = input_ids[0].tolist()
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    tail = len(plain_ids) - (max(i for i, t in enumerate(plain_ids) if t == image_id) + 1)
    shift = len(ids) - len(plain_ids)
    if tail <= 0 or ids[-tail:] != plain_ids[-tail:]:
        raise ValueError("The processor's tokens after the image do not match the tokenizer's; cannot map offsets.")
    relative = [(s - report_start, e - report_start) for s, e in offsets]
    sentence_of = token_sentence_ids(relative, spans)
    positions = [(i + shift, sid) for i, sid in enumerate(sentence_of) if sid >= 0]
    if not positions or min(p for p, _ in positions) <= len(ids) - tail - 1:
        raise ValueError("No report tokens found after the image tokens (empty report?).")
    return {"positions": [p for p, _ in positions], "sentences": [s for _, s in positions]}


# ----------------------------------------------------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------------------------------------------------


def resolve_structures(config, structures=None) -> dict[str, list[int]]:
    """Structure name -> channel indices. `structures`: None (every channel, by `config.seg_class_names`), a list of
    channel names, or a dict name -> channel indices or channel names (a group is ablated all at once)."""
    names = list(config.seg_class_names)
    index = {name: i for i, name in reversed(list(enumerate(names)))}

    def channel(member) -> int:
        if isinstance(member, int) and 0 <= member < len(names):
            return member
        if isinstance(member, str) and member in index:
            return index[member]
        raise ValueError(f"Unknown segmentation channel {member!r}; the model has {len(names)} maps: {names[:8]}...")

    if structures is None:
        return {name: [i] for i, name in enumerate(names)}
    if isinstance(structures, Mapping):
        resolved = {str(k): sorted({channel(m) for m in members}) for k, members in structures.items()}
    else:
        resolved = {str(name): [channel(name)] for name in structures}
    empty = [k for k, v in resolved.items() if not v]
    if empty or not resolved:
        raise ValueError(f"Every structure needs at least one channel; empty: {empty or 'all (no structures)'}.")
    return resolved


def structure_groups(config, groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[int]]:
    """Group name -> indices of the model's channels that belong to it (default: CXAS_ANATOMY_GROUPS, for a model
    whose channels are CXAS classes). Groups with no channel in this model are left out."""
    if groups is None:
        from modeling_asarg import CXAS_ANATOMY_GROUPS as groups
    names = list(config.seg_class_names)
    out = {g: [i for i, n in enumerate(names) if n in set(members)] for g, members in groups.items()}
    return {g: idx for g, idx in out.items() if idx}


# ----------------------------------------------------------------------------------------------------------------------
# Model inputs: segmentation computed once, pooled once
# ----------------------------------------------------------------------------------------------------------------------


def check_traceable(model) -> None:
    """Raise ValueError (saying why) unless `model` can be traced: an ASaRG generation model that reads maps."""
    config = model.config
    if not getattr(config, "use_seg_maps", False):
        raise ValueError(
            "This model does not read segmentation maps (use_seg_maps=False), so removing a map cannot change its "
            "output: it cannot be traced to anatomy. Use a model trained with use_seg_maps=True."
        )
    if not hasattr(model, "lm_head") or not hasattr(model.model, "run_segmenter"):
        raise ValueError("trace_report needs an AsargForConditionalGeneration (with its LM head).")


def model_segmentation(model, inputs, seg_maps, seg_features) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(maps, features) for one image, running the built-in segmenter at most once."""
    config, base = model.config, model.model
    seg_maps = inputs.get("seg_maps") if seg_maps is None else seg_maps
    need_features = config.use_seg_features and seg_features is None
    if seg_maps is None or need_features:
        if base.segmenter is None or inputs.get("seg_pixel_values") is None:
            missing = "seg_maps" if seg_maps is None else "seg_features"
            raise ValueError(
                f"No {missing} to trace with: the model has no built-in segmenter (or the processor gave no "
                "seg_pixel_values). Pass `seg_maps=` / `seg_features=` or `segmentation_maps=` (K x H x W masks)."
            )
        seg = base.run_segmenter(inputs["seg_pixel_values"])
        seg_maps = seg["maps"] if seg_maps is None else seg_maps
        seg_features = seg["features"] if need_features else seg_features
    return seg_maps, (seg_features if config.use_seg_features else None)


def _pool(x: torch.Tensor | None, grid: tuple[int, int], device) -> torch.Tensor | None:
    # The model area-pools to the patch grid in float32; pooling here first is exact (pooling a grid-sized map to the
    # same grid is the identity) and makes the B ablated copies small.
    if x is None:
        return None
    x = torch.as_tensor(x).to(device)
    return F.adaptive_avg_pool2d(x.float() if x.dim() == 4 else x[None].float(), grid)


# ----------------------------------------------------------------------------------------------------------------------
# Tracing
# ----------------------------------------------------------------------------------------------------------------------


def _token_logprobs(model, inputs: dict, maps: torch.Tensor, positions: list[int], vision=None) -> torch.Tensor:
    """(B, T) log-probabilities of the tokens at `positions` for B rows that differ only in their seg maps.

    `vision`: the projector's vision input for this image (`_vision_features`); with it only the projector runs per
    row and the language model gets the projected image tokens (`mm_encoder_outputs`, the seam `generate` uses
    when it pre-encodes images). Without it every row runs the whole forward, vision tower included.
    """
    rows = maps.shape[0]
    length = inputs["input_ids"].shape[1]
    keep = length - (min(positions) - 1)  # logits only from the position that predicts the first report token on
    batch = {k: inputs[k].expand(rows, *inputs[k].shape[1:]) for k in ("input_ids", "attention_mask")}
    features = inputs.get("seg_features")
    features = None if features is None else features.expand(rows, *features.shape[1:])
    if vision is None:
        pixel_values = inputs["pixel_values"].expand(rows, *inputs["pixel_values"].shape[1:])
        seg = {"seg_maps": maps} | ({} if features is None else {"seg_features": features})
        out = model(**batch, pixel_values=pixel_values, **seg, logits_to_keep=keep)
    else:
        encoded = _projected_images(model, vision, inputs["pixel_values"], maps, features)
        out = model(**batch, mm_encoder_outputs=encoded, logits_to_keep=keep)
    logprobs = out.logits.float().log_softmax(-1)
    where = torch.tensor([p - 1 - (length - keep) for p in positions], device=logprobs.device)
    targets = inputs["input_ids"][0, positions].to(logprobs.device)
    return logprobs[:, where].gather(-1, targets.expand(rows, -1)[..., None])[..., 0]


def _vision_features(model, pixel_values: torch.Tensor, maps, features) -> torch.Tensor:
    """The projector's vision input (1, N, D) for one image: the model's own `get_vision_features`."""
    return model.model.get_vision_features(pixel_values)


def _projected_images(model, vision, pixel_values, maps, features) -> dict:
    """`mm_encoder_outputs` for B rows: the shared vision features projected with each row's seg columns, through the
    model's public seams (`get_seg_tokens`: pooling and checks; `project_image_tokens`: CLS and projector).
    `pixel_values` only tell `get_seg_tokens` the batch size and the patch grid, so an expanded view is enough."""
    base, rows = model.model, maps.shape[0]
    seg = base.get_seg_tokens(pixel_values.expand(rows, *pixel_values.shape[1:]), seg_maps=maps, seg_features=features)
    projected = base.project_image_tokens(vision.expand(rows, -1, -1), seg)
    return {"image": BaseModelOutputWithPooling(pooler_output=list(projected))}


def _ablation_drops(model, inputs, maps, channels: list[list[int]], positions, batch_size, vision=None) -> tuple:
    """Per-token drops (S, T) for every structure, and the full-map log-probs (T,).

    Every forward carries one unablated reference row next to its ablated rows, and drops are taken against the
    reference of the same forward: kernels may round differently for different batch shapes, and this way a
    structure that has no influence gives a drop of exactly zero instead of rounding noise.
    """
    drops, full = [], None
    for first in range(0, len(channels), batch_size):
        chunk = channels[first : first + batch_size]
        batch_maps = maps.repeat(len(chunk) + 1, 1, 1, 1)
        for row, members in enumerate(chunk, 1):
            batch_maps[row, members] = 0  # the counterfactual: this structure's map is absent
        logprobs = _token_logprobs(model, inputs, batch_maps, positions, vision)
        full = logprobs[0] if full is None else full
        drops.append(logprobs[:1] - logprobs[1:])
    return torch.cat(drops), full


def _sentence_traces(sentences, token_sentence, full, drops, names) -> list[SentenceTrace]:
    traces = []
    index = torch.tensor(token_sentence, device=full.device)
    for sid, (text, span) in enumerate(sentences):
        mine = index == sid
        n = int(mine.sum())
        summed = drops[:, mine].sum(-1).tolist() if n else [0.0] * len(names)
        ranking = [StructureDrop(name, d, d / n if n else 0.0) for name, d in zip(names, summed)]
        ranking.sort(key=lambda s: -s.drop)  # stable: ties keep the structures' order
        traces.append(SentenceTrace(text, span, float(full[mine].sum()), n, ranking))
    return traces


TRACING_METHODS = ("finding", "maps")


def default_method(model) -> str:
    """`finding` for a model with finding tokens (where its finding classifier looks: the best method on the tracing
    benchmarks' pointing game, docs/results.md), else `maps`."""
    return "finding" if getattr(model.model, "finding_tokens", None) is not None else "maps"


def trace_report(
    model,
    processor,
    image,
    report: str,
    prompt: str | None = None,
    structures=None,
    batch_size: int = 8,
    seg_maps=None,
    seg_features=None,
    segmentation_maps=None,
    method: str | None = None,
    _per_row_vision: bool = False,
) -> list[SentenceTrace]:
    """Rank anatomical structures for every sentence of `report`.

    method: `finding` (default for a model with finding tokens): the sentence's finding (its first positive CheXpert
    observation, by the rule labeler; with sided finding tokens, the side whose verdict is higher, whatever side the
    sentence names) and each structure's share of the attention of that finding's classifier query over the patches
    (soft: the structure's coverage of each patch); a sentence that asserts no finding gets no ranking. `maps`
    (default otherwise): the log-likelihood drop each structure's map removal causes, as below.

    model: an AsargForConditionalGeneration with use_seg_maps=True. processor: its AsargProcessor (fast tokenizer).
    image: PIL or numpy image. report: the text to trace (e.g. what `generate` wrote). prompt: the user instruction
    (default: the loaders' findings prompt). structures: see `resolve_structures` (default: every map channel;
    `structure_groups(model.config)` for CXAS anatomy groups). batch_size: ablated copies per forward.
    Segmentation: `seg_maps` (1,K,h,w) / `seg_features` (1,C,h,w) precomputed, or `segmentation_maps` (K,H,W masks
    at the image's size, through the processor), else the built-in segmenter runs once on the image.
    The vision tower and the segmenter run once; each ablated row costs one projector and language-model pass.
    (`_per_row_vision=True` runs the whole forward per row instead: the old path, kept for the benchmark.)
    """
    check_traceable(model)
    method = method or default_method(model)
    if method not in TRACING_METHODS:
        raise ValueError(f"Unknown tracing method {method!r}; choose one of {TRACING_METHODS}.")
    if method == "finding" and getattr(model.model, "finding_tokens", None) is None:
        raise ValueError("method='finding' traces the finding tokens' classifier; this model has none (use 'maps').")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    sentences = split_sentences(report)
    if not sentences:
        raise ValueError("The report has no sentences to trace.")
    named = resolve_structures(model.config, structures)
    full_text, report_start = _chat_text(processor, prompt or DEFAULT_PROMPT, report)
    encoded = processor(images=image, text=full_text, segmentation_maps=segmentation_maps, return_tensors="pt")
    tokens = _report_token_positions(
        processor, full_text, report_start, encoded["input_ids"], [s for _, s in sentences]
    )

    seg = (seg_maps, seg_features)
    if method == "finding":
        return _finding_traces(model, encoded, sentences, tokens, named, seg)
    drops, full = _run_ablations(model, encoded, named, tokens["positions"], batch_size, seg, _per_row_vision)
    return _sentence_traces(sentences, tokens["sentences"], full.cpu(), drops.cpu(), list(named))


def sentence_finding(model, sentence: str, verdicts: torch.Tensor, labeler=None) -> int | None:
    """The finding token a sentence rests on: its first positive CheXpert observation; with sided finding tokens for
    it (`config.finding_sides`), the side whose verdict (`verdicts`, logits relative to the thresholds) is higher.
    None when the sentence asserts no finding."""
    labels = (labeler or RuleLabeler()).label(sentence)
    positive = [name for name in CHEXPERT_LABELS if name != "No Finding" and labels.get(name) == 1]
    if not positive:
        return None
    sides = list(model.config.finding_sides or ())
    if positive[0] in sides:
        right = len(CHEXPERT_LABELS) + 2 * sides.index(positive[0])
        return right if verdicts[right] >= verdicts[right + 1] else right + 1
    return CHEXPERT_LABELS.index(positive[0])


def _finding_traces(model, encoded, sentences, tokens, named, seg) -> list[SentenceTrace]:
    """`trace_report(method="finding")`: one forward of the projector and the finding classifier, one teacher-forced
    forward for the sentences' log-likelihoods."""
    base, config = model.model, model.config
    with evaluation_mode(model):
        device = model.device
        maps, features = model_segmentation(model, encoded, *seg)
        pixel_values = encoded["pixel_values"].to(device)
        grid = tuple(int(x) // config.vision_config.patch_size for x in pixel_values.shape[-2:])
        maps = _pool(maps, grid, device)
        features = _pool(features, grid, device)
        vision = base.get_vision_features(pixel_values)
        seg_tokens = base.get_seg_tokens(pixel_values, seg_maps=maps, seg_features=features)
        image_tokens = base.project_image_tokens(vision, seg_tokens)
        verdicts = base.finding_tokens.relative(base.finding_logits(image_tokens, seg_tokens)[0].float())
        attention = base.finding_attention(image_tokens, seg_tokens)[0, :, -grid[0] * grid[1] :]
        inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values")}
        if features is not None:
            inputs["seg_features"] = features
        full = _token_logprobs(model, inputs, maps, tokens["positions"], vision)[0].cpu()
    coverage = {name: maps[0, members].amax(0).flatten().float() for name, members in named.items()}
    names, labeler = finding_names(config.finding_sides or ()), RuleLabeler()
    index = torch.tensor(tokens["sentences"])
    traces = []
    for sid, (text, span) in enumerate(sentences):
        mine = index == sid
        trace = SentenceTrace(text, span, float(full[mine].sum()), int(mine.sum()), method="finding")
        k = sentence_finding(model, text, verdicts, labeler)
        if k is not None:
            weights = attention[k].float()
            shares = {name: float((weights * cover).sum()) for name, cover in coverage.items()}
            trace.ranking = sorted((StructureDrop(n, v, v) for n, v in shares.items()), key=lambda d: -d.drop)
            trace.finding, trace.confidence = names[k], float(verdicts[k].sigmoid())
        traces.append(trace)
    return traces


@contextmanager
def evaluation_mode(model):
    """Eval mode (no dropout, BatchNorm statistics frozen) and no gradients for the block, then the model's mode back."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _run_ablations(model, encoded, named, positions, batch_size, seg, per_row_vision: bool):
    """Segment once, pool to the patch grid, encode the image once, then score the report with each structure's maps
    removed (eval mode)."""
    with evaluation_mode(model):
        device = model.device
        maps, features = model_segmentation(model, encoded, *seg)
        patch = model.config.vision_config.patch_size
        grid = tuple(int(s) // patch for s in encoded["pixel_values"].shape[-2:])
        inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values")}
        if features is not None:
            inputs["seg_features"] = _pool(features, grid, device)
        maps = _pool(maps, grid, device)
        vision = None
        if not per_row_vision:
            vision = _vision_features(model, inputs["pixel_values"], maps, inputs.get("seg_features"))
        return _ablation_drops(model, inputs, maps, list(named.values()), positions, batch_size, vision)


def trace_to_json(traces: Sequence[SentenceTrace], top: int | None = None) -> dict:
    """JSON-ready dict for the demo UI: per sentence its text, span, log-likelihood and the `top` structures."""
    return {
        "sentences": [
            {
                "text": t.text,
                "span": list(t.span),
                "log_likelihood": t.log_likelihood,
                "n_tokens": t.n_tokens,
                "method": t.method,
                "finding": t.finding,
                "confidence": t.confidence,
                "structures": [
                    {"name": s.name, "drop": s.drop, "normalised_drop": s.normalised_drop}
                    for s in t.ranking[: top if top is not None else len(t.ranking)]
                ],
            }
            for t in traces
        ]
    }
