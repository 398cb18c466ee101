"""The grounded report (demo, `asarg generate --ground`): the report, each sentence with its CheXpert labels and its
top structures (from `asarg.evaluation.tracing`) with pixel boxes; `to_radfact` turns it into RadFact's grounded-report
input. `segment` / `segment_image` give the segmenter's maps at the image's size, `generate_without` the
counterfactual report with structures removed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from asarg.processing.inference import generate_reports
from asarg.processing.loaders.common import DEFAULT_PROMPT

from .tracing import (
    SentenceTrace,
    check_traceable,
    evaluation_mode,
    model_segmentation,
    resolve_structures,
    split_sentences,
    structure_groups,
    trace_report,
)

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
            model_segmentation(model, encoded, encoded["seg_maps"], None)[1] if model.config.use_seg_features else None
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
    with evaluation_mode(model):
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
    with evaluation_mode(model):
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
                        "method": the tracing method (`trace_report`), "finding": the finding token traced
                        (method "finding"; None for a sentence that asserts none), "confidence": its verdict,
                        "structures": [{"name", "score": (method "finding") the share of the finding classifier's
                                        attention inside the structure, or (method "maps") the log-likelihood drop in
                                        nats when its maps are removed,
                                        "box": [x0, y0, x1, y1] pixels of the input image (x1, y1 exclusive), or
                                        None when its mask is empty}, ... the `top` highest scores first]}]}
    structures: "groups" (CXAS anatomy groups, `structure_groups`), "maps" (every map channel) or anything
    `resolve_structures` takes. A box is that of the structure's mask (its maps at the image's size > 0.5; a group:
    the union of its members). The segmenter runs once for generation, tracing and boxes. segmentation_maps: K x H
    x W masks at the image's size, for a model without a built-in segmenter. segmentation: a `segment` result to
    reuse (then nothing is segmented here).
    """
    check_traceable(model)
    named = _named_structures(model.config, structures)
    with evaluation_mode(model):
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
            "method": t.method,
            "finding": t.finding,
            "confidence": t.confidence,
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
    with evaluation_mode(model):
        seg = _image_segmentation(model, processor, image, segmentation_maps)
        maps = seg.maps.clone()
        maps[:, channels] = 0
        return _generate_one(model, processor, image, prompt, max_new_tokens, maps, seg.features)
