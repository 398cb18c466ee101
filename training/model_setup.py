"""Model and processor of the SFT recipe (`sft_asarg.py`): an ASaRG checkpoint, a LLaVA checkpoint grown into ASaRG
(`from_llava`) or the tiny CPU model; the segmenter-less arm; the check that LoRA stays in the language model."""

from __future__ import annotations

import logging
import os

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from asarg.evaluation.report_labeler.findings import SIDED_OBSERVATIONS, check_sided, finding_names
from asarg.processing.checkpoints import check_code
from asarg.processing.checkpoints import load_model as load_checked_model
from asarg.processing.compat import lora_target_matches
from modeling_asarg import (
    AsargForConditionalGeneration,
    AsargProcessor,
    cxas_seg_config,
    default_segmenter_config,
    finding_token_count,
)

logger = logging.getLogger("asarg.sft")
SEGMENTERS = ("builtin", "cxas", "none")
ARM_SWITCHES = ("use_seg_features", "use_seg_maps")


def arm(args) -> dict:
    """The ablation arm of a new model: a switch left unset (None) is on."""
    return {name: getattr(args, name) is not False for name in ARM_SWITCHES}


def segmenter_fields(args) -> dict:
    """AsargConfig fields of a new model's segmenter: CXAS, or the built-in U-Net at the recipe's size."""
    if args.segmenter == "cxas":
        options = {"groups": args.cxas_groups, "feature_level": args.cxas_feature_level}
        return cxas_seg_config(**{k: v for k, v in options.items() if v is not None})
    return {
        "num_seg_classes": args.num_seg_classes,
        "seg_feature_channels": args.seg_feature_channels,
        "segmenter_config": default_segmenter_config(args.num_seg_classes, args.seg_feature_channels),
    }


def load_model(args):
    """(model, processor, on_disk) for an AsargModelConfig; on_disk is False when the base weights exist only here.

    `segmenter=none` still builds (or keeps) a segmenter: it fills the seg cache, then `strip_segmenter` removes it."""
    model, processor, on_disk = _build(args)
    config = model.config
    processor.num_finding_tokens = finding_token_count(config)  # a recipe may switch finding tokens on
    if config.seg_group_dropout and config.seg_dropout_groups is None:  # set on a loaded config: resolve it now
        config.seg_dropout_groups = config.anatomy_groups()
    if args.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    return model, processor, on_disk


def _build(args):
    if args.segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={args.segmenter!r}; use one of {SEGMENTERS}")
    if args.model_name_or_path == "tiny":
        from asarg.training.tiny import tiny_asarg

        if args.segmenter == "cxas":
            raise ValueError("the tiny model has the built-in U-Net; segmenter=cxas needs a LLaVA or ASaRG checkpoint")
        sizes = {"num_seg_classes": args.num_seg_classes, "seg_feature_channels": args.seg_feature_channels}
        return (*tiny_asarg(**arm(args), **sizes, **training_fields(args), builtin_segmenter=True), False)
    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required: an ASaRG checkpoint, a LLaVA checkpoint or 'tiny'")
    source, revision = args.model_name_or_path, args.model_revision
    kwargs = {"revision": revision, "dtype": args.dtype, "attn_implementation": args.attn_implementation}
    if os.path.isdir(source):
        check_code(source)  # a foreign model's own code is named (and never run) before transformers reads it
    saved = AutoConfig.from_pretrained(source, revision=revision)
    model_type = saved.model_type
    if model_type == "asarg":
        check_finding_sides(args, saved)
        # names a damaged file; a new finding head (finding_loss_weight) starts from random weights
        model = load_checked_model(source, AutoModelForImageTextToText, **kwargs, **training_fields(args))
        check_arm(args, model.config)
        return model, AutoProcessor.from_pretrained(source, revision=revision), True
    if model_type != "llava":
        raise ValueError(f"{source} is a {model_type!r} checkpoint; expected asarg, llava or 'tiny'")
    logger.warning(
        "Growing ASaRG from LLaVA: the built-in segmenter starts from RANDOM weights. For the paper's CXAS "
        "use `asarg convert-cxas WEIGHTS --llava %s --out DIR` and train from DIR.",
        source,
    )
    model = AsargForConditionalGeneration.from_llava(
        source, llava_kwargs=kwargs, **arm(args), **segmenter_fields(args), **training_fields(args)
    )
    llava_processor = AutoProcessor.from_pretrained(source, revision=revision)
    return model, AsargProcessor.from_llava_processor(llava_processor, model.config), False


TRAINING_FIELDS = (
    "finding_loss_weight",
    "finding_tokens",
    "finding_token_label_rate",
    "finding_side_gate",
    "seg_group_dropout",
    "seg_all_maps_dropout",
)


def training_fields(args) -> dict:
    """The model's training-only switches (`AsargConfig`: the auxiliary finding loss, finding tokens, their sides and
    their verdict forcing, group and all-maps dropout) that the recipe sets; one left unset (None) keeps the
    checkpoint's own."""
    fields = {name: getattr(args, name) for name in TRAINING_FIELDS if getattr(args, name) is not None}
    sides = finding_sides(args)
    if sides is not None:
        fields |= {"finding_sides": sides or None, "num_finding_labels": len(finding_names(sides))}
    return fields


def finding_sides(args) -> list[str] | None:
    """The recipe's `finding_sides` (`all`: every one-sided CheXpert observation; `none`: no sides), checked; None
    when unset."""
    sides = getattr(args, "finding_sides", None)
    if sides is None:
        return None
    if sides in (["all"], ["none"]):
        return list(SIDED_OBSERVATIONS) if sides == ["all"] else []
    return check_sided(sides)


def check_finding_sides(args, config) -> None:
    """A checkpoint's finding tokens fix their sides (the classifier's size): a recipe may only restate them."""
    sides = finding_sides(args)
    saved = list(getattr(config, "finding_sides", None) or [])
    if sides is not None and getattr(config, "finding_tokens", False) and sides != saved:
        raise ValueError(
            f"finding_sides={sides} but the checkpoint's finding tokens have {saved}: their number is fixed by the "
            "trained classifier; restate the checkpoint's sides or train from a checkpoint without finding tokens."
        )


def has_finding_head(source: str, revision: str | None = None, tokens: bool = False) -> bool:
    """Whether the checkpoint at `source` was saved with the finding head a recipe trains (its config's
    `finding_loss_weight` > 0; with `tokens`, the finding-token classifier, else the linear head): a recipe that
    restates the weight then keeps the trained head instead of starting a new one."""
    if source == "tiny" or not source:
        return False
    config = AutoConfig.from_pretrained(source, revision=revision)
    saved_tokens = bool(getattr(config, "finding_tokens", False))
    return getattr(config, "finding_loss_weight", 0) > 0 and saved_tokens == tokens


def check_arm(args, config) -> None:
    """An ASaRG checkpoint's arm is fixed by its projector's width: a recipe may only restate it."""
    for name in ARM_SWITCHES:
        wanted = getattr(args, name)
        if wanted is not None and wanted != getattr(config, name):
            raise ValueError(
                f"{name}={wanted} but the checkpoint has {getattr(config, name)}; an arm is fixed by the "
                "projector's width: grow a new one from LLaVA instead"
            )


def strip_segmenter(model, processor) -> None:
    """The `none` arm: the model keeps no segmenter and the processor stops producing its input."""
    model.model.segmenter = None
    model.config.segmenter_config = None
    processor.seg_image_size = None


def check_lora_targets(peft_config, model) -> None:
    """LoRA must land on language-model modules only, never on the vision tower's or the segmenter's layers."""
    if peft_config.target_modules is None:
        raise ValueError("use_peft needs lora_target_modules (the recipes give a regex over the language model)")
    hits = [name for name, _ in model.named_modules() if lora_target_matches(peft_config, name)]
    if not hits or any("language_model" not in name for name in hits):
        raise ValueError(f"lora_target_modules must match language-model modules only; it matches {hits[:5]}")
