"""The model side of the ASaRG Space: load a checkpoint, ground a report, segment the film, regenerate without a
structure. Thin wrappers over `asarg.evaluation.grounding`, plus the one thing the Space adds: a lock.

Why the lock: one model serves every visitor, and the calls are not re-entrant (`generate_reports` switches the
tokenizer's padding side for the duration of a call, tracing switches the model to eval mode and back). The app also
puts every model event in one gradio concurrency group, so visitors wait in the queue (and see their place in it)
rather than on this lock; the lock keeps direct calls (tests, scripts) just as safe.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from logic import InputError, resize_masks, structure_masks
from PIL import Image

from asarg.evaluation import grounding
from asarg.processing.input_check import check_input, load_input_stats, summary

MODEL_ENV = "ASARG_MODEL"
TRUST_ENV = "ASARG_TRUST_REMOTE_CODE"


@dataclass
class Analysis:
    """What one film's analysis keeps for the page: the film as shown, the grounded report, structure masks."""

    image: Image.Image
    grounded: dict
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def model_id(flag: str | None = None) -> str:
    """The model to serve: the `--model` flag, else $ASARG_MODEL, else the embedded default model."""
    from asarg.processing.models import resolve_model

    return resolve_model(flag or os.environ.get(MODEL_ENV) or None)


class Engine:
    """One loaded ASaRG model (with a built-in segmenter and seg-map inputs) and its processor."""

    def __init__(self, model, processor, name: str = "", top: int = 5, max_new_tokens: int = 160):
        grounding.check_traceable(model)
        grounding.check_segmentable(model, processor)
        self.model, self.processor, self.name = model, processor, name
        self.top, self.max_new_tokens = top, max_new_tokens
        self.channel_names = list(model.config.seg_class_names)
        self.groups = grounding.structure_groups(model.config)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | None = None, trust_remote_code: bool | None = None, **kwargs) -> Engine:
        """Load a local folder or Hub id. A checkpoint's own model code (differing from the installed asarg's) runs
        only with `trust_remote_code`, by default $ASARG_TRUST_REMOTE_CODE=1."""
        from asarg.processing.inference import load_for_generation

        if trust_remote_code is None:
            trust_remote_code = os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}
        name = model_id(model)
        return cls(*load_for_generation(name, trust_remote_code), name=name, **kwargs)

    def structures(self) -> list[str]:
        """What can be removed in the counterfactual: the anatomy groups, then the maps that are not a group's name
        (`generate_without` reads a name as the group first)."""
        return list(self.groups) + [n for n in self.channel_names if n not in self.groups]

    def describe(self) -> str:
        """The model by what it is: its name, what it was trained on, where its card is (never a cache path)."""
        stats = load_input_stats(getattr(self.model, "name_or_path", None))
        trained = f", trained on {stats['training_data']}" if stats and stats.get("training_data") else ""
        if self.name and Path(self.name).resolve().name.startswith("default-model-"):
            card = "https://github.com/org/asarg/blob/main/asarg/default_model/README.md"
            return f"the ASaRG default model shipped with asarg (small-synth size{trained}; [model card]({card}))"
        if self.name and not Path(self.name).exists():  # a Hub id
            return f"`{self.name}`{trained} ([model card](https://huggingface.co/{self.name}))"
        return f"`{Path(self.name).name or 'custom'}`{trained}"

    def check(self, image: Image.Image, header: dict | None = None) -> dict:
        """The input check's verdict (`asarg.processing.input_check`); raises `InputError` with the reason when the
        film is not a frontal chest radiograph."""
        with self._lock:
            verdict = check_input(self.model, self.processor, image, header)
        if verdict["refuse"]:
            raise InputError(summary(verdict))
        return verdict

    def analyse(self, image: Image.Image, header: dict | None = None) -> Analysis:
        """Report, CheXpert labels and traced anatomy per sentence, and the masks to draw on the film; the input
        check first (its verdict in `grounded["input_check"]`)."""
        verdict = self.check(image, header)
        with self._lock:
            seg = grounding.segment(self.model, self.processor, image)  # once: the report, its tracing and the overlay
            grounded = grounding.ground_report(
                self.model, self.processor, image, top=self.top, max_new_tokens=self.max_new_tokens, segmentation=seg
            )
            probabilities = grounding.segmentation_masks(seg)
        # The overlay shows the groups; a sentence may also name single maps (a model whose maps form no group).
        named = dict(self.groups)
        for sentence in grounded["sentences"]:
            for item in sentence["structures"]:
                if item["name"] not in named and item["name"] in self.channel_names:
                    named[item["name"]] = [self.channel_names.index(item["name"])]
        masks = resize_masks(structure_masks(probabilities, named), image.size)
        return Analysis(image, {**grounded, "input_check": verdict}, masks)

    def without(self, image: Image.Image, structure: str) -> str:
        """The report written with `structure`'s maps removed (a group or a map name)."""
        with self._lock:
            return grounding.generate_without(
                self.model, self.processor, image, [structure], max_new_tokens=self.max_new_tokens
            )


__all__ = ["Analysis", "Engine", "MODEL_ENV", "model_id"]
