"""Trace report sentences to anatomy by counterfactual map ablation, and score it on SynthCXR.

For one image and one report (generated or given), `trace_report` teacher-forces prompt + report and measures, for
every sentence, how much the sentence's log-likelihood drops when one anatomical structure's segmentation map (or a
group of maps) is removed:

    drop(sentence, structure) = sum over the sentence's tokens of  log p_full(token) - log p_ablated(token)

Removing a map = setting its channel to zero. That is what the model was built to treat as "no map": a binary mask
of a structure that is absent is all zeros, and missing or ablated maps have always been zero channels, so the counterfactual input is one the model can read, not an out-of-distribution value.
Only the map channels are ablated; segmenter features (if the model reads them) stay as they are. The vision tower
and the segmenter run once per trace; each ablated row costs one projector and language-model pass (the projected
image tokens go in through `mm_encoder_outputs`, the seam `generate` uses when it pre-encodes images).

`ground_report` is the user-facing form (demo, `asarg generate --ground`): the report, each sentence with its
CheXpert labels and its top structures with pixel boxes; `to_radfact` turns it into RadFact's grounded-report input.
`segment_image` gives the segmenter's maps at the image's size, `generate_without` the counterfactual report.

`score_grounding` checks the rankings against SynthCXR's known finding locations (hit@k, MRR, and what a random
ranking would score). With an untrained or tiny model the rankings are meaningless; they mean something only for a
model trained with segmentation maps.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

from asarg.processing.inference import generate_reports, prompt_text
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
    ranking: list[StructureDrop] = field(default_factory=list)  # largest drop first

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


def _segmentation(model, inputs, seg_maps, seg_features) -> tuple[torch.Tensor, torch.Tensor | None]:
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
    _per_row_vision: bool = False,
) -> list[SentenceTrace]:
    """Rank anatomical structures for every sentence of `report` by the log-likelihood drop their removal causes.

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
    drops, full = _run_ablations(model, encoded, named, tokens["positions"], batch_size, seg, _per_row_vision)
    return _sentence_traces(sentences, tokens["sentences"], full.cpu(), drops.cpu(), list(named))


@contextmanager
def _evaluating(model):
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
    with _evaluating(model):
        device = model.device
        maps, features = _segmentation(model, encoded, *seg)
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
                "structures": [
                    {"name": s.name, "drop": s.drop, "normalised_drop": s.normalised_drop}
                    for s in t.ranking[: top if top is not None else len(t.ranking)]
                ],
            }
            for t in traces
        ]
    }


# ----------------------------------------------------------------------------------------------------------------------
# Grounded output: labels and boxes per sentence (demo, CLI, RadFact)
# ----------------------------------------------------------------------------------------------------------------------

BOX_THRESHOLD = 0.5  # a pixel belongs to a structure when its map value (probability / coverage) exceeds this
_LABEL_WORDS = {1.0: "positive", -1.0: "uncertain", 0.0: "negative"}


class _Segmentation(NamedTuple):
    maps: torch.Tensor  # (1, K, h, w): what the model reads (the segmenter's maps, or the given masks pooled)
    features: torch.Tensor | None  # (1, C, h', w') segmenter features, None when the model reads none
    size: tuple[int, int]  # (W, H) of the input image
    masks: np.ndarray | None  # the given (K, H, W) masks at the image's size; None: resize `maps` on demand
    padded: bool  # the processor padded the image to a centred square (so the maps cover that square)


def check_segmentable(model, processor) -> None:
    """Raise ValueError unless the model's built-in segmenter can segment images given through `processor`."""
    segmenter = getattr(getattr(model, "model", None), "segmenter", None)
    if segmenter is None or not getattr(processor, "seg_image_size", None):
        raise ValueError(
            "This model has no built-in segmenter (or its processor makes no seg_pixel_values), so the image cannot "
            "be segmented here. Pass `segmentation_maps=` (K x H x W masks at the image's size, the model's classes)."
        )


def _image_segmentation(model, processor, image, segmentation_maps=None) -> _Segmentation:
    """The image's segmentation, computed once: the built-in segmenter's maps and features, or given masks."""
    from modeling_asarg.processing_asarg import to_rgb_image

    size = to_rgb_image(image).size
    padded = bool(getattr(processor, "pad_to_square", False))
    if segmentation_maps is not None:
        if model.config.use_seg_features and model.model.segmenter is None:
            raise ValueError(
                "This model reads segmenter features (use_seg_features=True), which masks cannot supply, and it has "
                "no built-in segmenter to compute them."
            )
        encoded = processor(images=image, segmentation_maps=segmentation_maps, return_tensors="pt")
        features = (
            _segmentation(model, encoded, encoded["seg_maps"], None)[1] if model.config.use_seg_features else None
        )
        masks = np.asarray(segmentation_maps, dtype=np.float32)
        return _Segmentation(encoded["seg_maps"].to(model.device), features, size, masks, padded)
    check_segmentable(model, processor)
    encoded = processor(images=image, return_tensors="pt")
    seg = model.model.run_segmenter(encoded["seg_pixel_values"].to(model.device))
    features = seg["features"] if model.config.use_seg_features else None
    return _Segmentation(seg["maps"], features, size, None, padded)


def _resize_maps(maps: torch.Tensor, size: tuple[int, int], padded: bool) -> np.ndarray:
    """(K, H, W) float32: square maps (1, K, s, s) brought back onto the input image's pixels.

    The processor pads the image to a centred square (or, without padding, squashes it to one) before the segmenter
    sees it, so the maps are resized to that square and the image's own region is cut out. Done a few channels at a
    time: a full-resolution radiograph makes each channel tens of MB.
    """
    width, height = size
    side = max(width, height)
    target, left, top = (
        ((side, side), (side - width) // 2, (side - height) // 2) if padded else ((height, width), 0, 0)
    )
    out = np.empty((maps.shape[1], height, width), np.float32)
    for first in range(0, maps.shape[1], 8):
        chunk = F.interpolate(maps[:, first : first + 8].float(), size=target, mode="bilinear", align_corners=False)
        out[first : first + 8] = chunk[0, :, top : top + height, left : left + width].cpu().numpy()
    return out


def segment(model, processor, image, segmentation_maps=None) -> _Segmentation:
    """The image's segmentation, once (the built-in segmenter's maps and features, or given K x H x W masks), to pass
    to `ground_report(segmentation=...)` and `segmentation_masks`: one segmenter run serves both."""
    with _evaluating(model):
        return _image_segmentation(model, processor, image, segmentation_maps)


def segmentation_masks(segmentation: _Segmentation) -> np.ndarray:
    """float32 (K, H, W) maps of a `segment` result at the input image's size (see `segment_image`)."""
    if segmentation.masks is not None:
        return segmentation.masks
    return _resize_maps(segmentation.maps, segmentation.size, segmentation.padded)


def segment_image(model, processor, image) -> np.ndarray:
    """The built-in segmenter's maps for `image`: float32 (K, H, W) probabilities in [0, 1] at the image's size.

    K = the model's map channels (`model.config.seg_class_names`, the maps its projector reads). H x W is the input
    image's size (after `to_rgb_image`), so the maps overlay it directly. Memory: K * H * W * 4 bytes (about 0.9 GB
    for 59 maps of a 2000 x 1900 film). Raises ValueError for a model without a built-in segmenter.
    """
    with _evaluating(model):
        seg = _image_segmentation(model, processor, image)
    return _resize_maps(seg.maps, seg.size, seg.padded)


def _mask_box(mask: np.ndarray) -> list[int] | None:
    """[x0, y0, x1, y1] pixel box of a boolean (H, W) mask (x1, y1 exclusive), or None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _channel_boxes(seg: _Segmentation, channels: Sequence[int]) -> dict[int, list[int] | None]:
    """Pixel box of each channel's mask (map > BOX_THRESHOLD at the image's size)."""
    boxes = {}
    for first in range(0, len(channels), 8):
        chunk = list(channels[first : first + 8])
        maps = seg.masks[chunk] if seg.masks is not None else _resize_maps(seg.maps[:, chunk], seg.size, seg.padded)
        boxes.update({c: _mask_box(m > BOX_THRESHOLD) for c, m in zip(chunk, maps)})
    return boxes


def _union_box(boxes: Sequence[list[int] | None]) -> list[int] | None:
    # The bounding box of a union of masks is the hull of the members' boxes, so groups need no union mask.
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return [
        min(b[0] for b in present),
        min(b[1] for b in present),
        max(b[2] for b in present),
        max(b[3] for b in present),
    ]


@functools.cache
def _labeler():
    """One rule labeler per process: building it compiles its phrase files."""
    from .report_labeler import RuleLabeler

    return RuleLabeler()


def _labels(text: str, keep_no_finding: bool) -> dict[str, str]:
    """CheXpert observation -> "positive" / "uncertain" / "negative" (unmentioned ones left out).

    Per sentence "No Finding" is left out: it only says that this one sentence names no other finding.
    """
    labels = _labeler().label(text)
    return {
        o: _LABEL_WORDS[v] for o, v in labels.items() if v in _LABEL_WORDS and (keep_no_finding or o != "No Finding")
    }


def _named_structures(config, structures) -> dict[str, list[int]]:
    """Structure name -> channels for `structures`: "groups" gives the CXAS anatomy groups (or each map alone when
    the model's channels form no group), "maps" or None every map, anything else goes to `resolve_structures`."""
    if isinstance(structures, str) and structures == "groups":
        return structure_groups(config) or resolve_structures(config)
    if structures is None or (isinstance(structures, str) and structures == "maps"):
        return resolve_structures(config)
    return resolve_structures(config, structures)


def _generate_one(model, processor, image, prompt, max_new_tokens, maps, features) -> str:
    """The greedy report for one image, fed the given segmentation (the segmenter does not run again)."""

    seg = {"seg_maps": maps} | ({} if features is None else {"seg_features": features})
    return generate_reports(model, processor, [image], prompt or DEFAULT_PROMPT, 1, max_new_tokens, **seg)[0]


def ground_report(
    model,
    processor,
    image,
    report: str | None = None,
    *,
    top: int = 5,
    structures="groups",
    prompt: str | None = None,
    max_new_tokens: int = 160,
    segmentation_maps=None,
    segmentation: _Segmentation | None = None,
) -> dict:
    """The report of `image` (generated greedily if not given), each sentence with its labels and traced anatomy.

    Returns a JSON-ready dict:
        {"report": str, "image_size": [W, H], "labels": {observation: value} (the whole report),
         "sentences": [{"text", "span": [start, end] in the report,
                        "labels": {CheXpert observation: "positive" | "uncertain" | "negative"} (rule labeler),
                        "structures": [{"name", "score": log-likelihood drop in nats when its maps are removed,
                                        "box": [x0, y0, x1, y1] pixels of the input image (x1, y1 exclusive), or
                                        None when its mask is empty}, ... the `top` largest drops first]}]}
    structures: "groups" (CXAS anatomy groups, `structure_groups`), "maps" (every map channel) or anything
    `resolve_structures` takes. A box is that of the structure's mask (its maps at the image's size > 0.5; a group:
    the union of its members). The segmenter runs once for generation, tracing and boxes. segmentation_maps: K x H
    x W masks at the image's size, for a model without a built-in segmenter. segmentation: a `segment` result to
    reuse (then nothing is segmented here).
    """
    check_traceable(model)
    named = _named_structures(model.config, structures)
    with _evaluating(model):
        seg = (
            segmentation
            if segmentation is not None
            else _image_segmentation(model, processor, image, segmentation_maps)
        )
        if report is None:
            report = _generate_one(model, processor, image, prompt, max_new_tokens, seg.maps, seg.features)
        traces = []
        if split_sentences(report):
            traces = trace_report(
                model, processor, image, report, prompt, named, seg_maps=seg.maps, seg_features=seg.features
            )
    return _grounded(report, traces, named, seg, top)


def _grounded(report: str, traces: Sequence[SentenceTrace], named: dict, seg: _Segmentation, top: int) -> dict:
    """`ground_report`'s dict; boxes only for the structures it shows, each computed once."""
    shown = {s.name for t in traces for s in t.ranking[:top]}
    channel_box = _channel_boxes(seg, sorted({c for name in shown for c in named[name]}))
    box = {name: _union_box([channel_box[c] for c in named[name]]) for name in shown}
    sentences = [
        {
            "text": t.text,
            "span": list(t.span),
            "labels": _labels(t.text, keep_no_finding=False),
            "structures": [{"name": s.name, "score": s.drop, "box": box[s.name]} for s in t.ranking[:top]],
        }
        for t in traces
    ]
    return {"report": report, "image_size": list(seg.size), "labels": _labels(report, True), "sentences": sentences}


def to_radfact(grounded: Mapping, *, top: int = 1) -> list[dict]:
    """A `ground_report` dict as RadFact's grounded report: [{"text", "boxes": [{"x_min", "y_min", "x_max",
    "y_max"}] normalised to [0, 1], or None}], one entry per sentence.

    RadFact's schema (microsoft/RadFact, src/radfact/data_utils/grounded_phrase_list.py: `GroundedPhrase` with
    `boxes: list[NormalizedBox] | None`, where an empty list is refused and must be None; `NormalizedBox` has
    0 <= x_min <= x_max <= 1, same for y; examples/grounded_reporting_examples.json gives negative sentences
    "boxes": null). So a sentence gets the boxes of its `top` structures only when it asserts a finding (a positive
    or uncertain label), else None.
    """
    width, height = grounded["image_size"]
    phrases = []
    for sentence in grounded["sentences"]:
        asserted = any(v in ("positive", "uncertain") for v in sentence["labels"].values())
        boxes = [s["box"] for s in sentence["structures"][:top] if s["box"] is not None] if asserted else []
        normalised = [
            {"x_min": x0 / width, "y_min": y0 / height, "x_max": x1 / width, "y_max": y1 / height}
            for x0, y0, x1, y1 in boxes
        ]
        phrases.append({"text": sentence["text"], "boxes": normalised or None})
    return phrases


def _drop_channels(config, drop: Sequence[str]) -> list[int]:
    """Channels of the named structures: CXAS anatomy groups (`structure_groups`) or the model's map names."""
    groups, names = structure_groups(config), list(config.seg_class_names)
    channels, unknown = set(), []
    for name in drop:
        if name in groups:
            channels.update(groups[name])
        elif name in names:
            channels.update(i for i, n in enumerate(names) if n == name)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"Unknown structure(s) {unknown}: name an anatomy group {sorted(groups)} or a map of this "
            f"model ({names[:8]}...)."
        )
    return sorted(channels)


def generate_without(
    model,
    processor,
    image,
    drop: Sequence[str],
    *,
    prompt: str | None = None,
    max_new_tokens: int = 160,
    segmentation_maps=None,
) -> str:
    """The greedy report of `image` with the named structures' maps set to zero (the counterfactual "as if absent").

    drop: anatomy group names (`structure_groups`) and/or map names (`model.config.seg_class_names`). The model is
    fed the image's segmentation precomputed (`seg_maps`), those channels zeroed; segmenter features, if the model
    reads them, stay as they are (as in `trace_report`). segmentation_maps: as in `ground_report`.
    """
    check_traceable(model)
    channels = _drop_channels(model.config, drop)
    with _evaluating(model):
        seg = _image_segmentation(model, processor, image, segmentation_maps)
        maps = seg.maps.clone()
        maps[:, channels] = 0
        return _generate_one(model, processor, image, prompt, max_new_tokens, maps, seg.features)


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
    "segment_image",
    "split_sentences",
    "structure_groups",
    "to_radfact",
    "token_sentence_ids",
    "trace_report",
    "trace_to_json",
]
