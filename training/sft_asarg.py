"""Supervised fine-tuning of ASaRG with TRL's SFTTrainer: a declarative recipe, all hyper-parameters in YAML.

    python training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml            # CPU, < 1 minute
    accelerate launch --config_file training/accelerate/ddp.yaml training/sft_asarg.py \
        --config training/recipes/llava15_7b_asarg_lora.yaml                                 # GPUs (unverified)
    torchrun --nproc_per_node 2 training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml  # DDP on CPU

Any YAML key can be overridden on the command line (`--dataset_path DIR --output_dir OUT --max_steps 3`).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer, TrlParser

logger = logging.getLogger("asarg.sft")
FORMATS = ("synthcxr", "r2gen", "mimic-cxr-jpg", "jsonl")
SEGMENTERS = ("builtin", "cxas", "none")


@dataclass
class ScriptArguments:
    """Data. Args:
    dataset_format: `synthcxr` (a directory from `asarg synth`), `r2gen` (annotation.json + `image_root`),
        `mimic-cxr-jpg` (PhysioNet root; reports under `reports_dir`, default the root) or `jsonl` (a manifest).
    report_section: `findings` or `findings+impression` (SynthCXR and R2Gen have findings only).
    seg_cache_dir: run the frozen segmenter once per image into this cache and feed its entries to the model.
    """

    dataset_path: str | None = field(
        default=None, metadata={"help": "SynthCXR dir, annotation.json, MIMIC root or JSONL."}
    )
    dataset_format: str = field(default="synthcxr", metadata={"help": f"One of {FORMATS}."})
    image_root: str | None = field(default=None, metadata={"help": "r2gen: the folder image_path is relative to."})
    reports_dir: str | None = field(default=None, metadata={"help": "mimic-cxr-jpg: MIMIC-CXR report files."})
    report_section: str = field(default="findings", metadata={"help": "findings or findings+impression."})
    prompt: str | None = field(default=None, metadata={"help": "User prompt; default: the loaders' prompt."})
    dataset_train_split: str = field(default="train")
    dataset_test_split: str = field(default="validation")
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    seg_cache_dir: str | None = field(default=None, metadata={"help": "Segmentation cache folder (optional)."})


@dataclass
class AsargModelArguments:
    """Model. Args:
    model_name_or_path: an ASaRG checkpoint, a LLaVA checkpoint (grown with `from_llava`) or `tiny` (CPU model).
    use_seg_features / use_seg_maps: the ablation arm; None = the checkpoint's (True for new models).
    segmenter: `builtin` (small U-Net), `cxas` (the paper's CXAS U-Net, via `cxas_seg_config`) or `none` (the model
        keeps no segmenter; needs `seg_cache_dir`). An ASaRG checkpoint keeps its own segmenter unless `none`.
    """

    model_name_or_path: str = field(default="tiny")
    use_seg_features: bool | None = field(default=None)
    use_seg_maps: bool | None = field(default=None)
    segmenter: str = field(default="builtin", metadata={"help": f"One of {SEGMENTERS}."})
    cxas_groups: str | None = field(default=None, metadata={"help": "'anatomy' merges CXAS classes into groups."})
    cxas_feature_level: str = field(default="feats")
    num_seg_classes: int = field(default=4, metadata={"help": "builtin segmenter grown onto LLaVA only."})
    seg_feature_channels: int = field(default=8, metadata={"help": "builtin segmenter grown onto LLaVA only."})
    dtype: str = field(default="float32", metadata={"help": "float32 / bfloat16 for loading checkpoints."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "LLaVA-1.5 keeps CLIP frozen."})
    use_peft: bool = field(default=False)
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.05)
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    )
    lora_modules_to_save: list[str] = field(default_factory=lambda: ["multi_modal_projector"])


# ---- Model -----------------------------------------------------------------------------------------------------------


def arm(args: AsargModelArguments) -> dict:
    return {"use_seg_features": args.use_seg_features is not False, "use_seg_maps": args.use_seg_maps is not False}


def seg_kwargs(args: AsargModelArguments) -> dict:
    from modeling_asarg import cxas_seg_config, default_segmenter_config

    if args.segmenter == "cxas":
        return cxas_seg_config(groups=args.cxas_groups, feature_level=args.cxas_feature_level)
    segmenter = default_segmenter_config(args.num_seg_classes, args.seg_feature_channels)
    return {
        "num_seg_classes": args.num_seg_classes,
        "seg_feature_channels": args.seg_feature_channels,
        "segmenter_config": segmenter,
    }


def asarg_processor(model, source: str):
    from modeling_asarg import AsargProcessor

    return AsargProcessor.from_llava_processor(AutoProcessor.from_pretrained(source), model.config)


def load_model(args: AsargModelArguments):
    """(model, processor, on_disk): on_disk is False when the base weights exist only in this process."""
    import torch

    from modeling_asarg import AsargForConditionalGeneration

    if args.segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={args.segmenter!r}; use one of {SEGMENTERS}")
    if args.model_name_or_path == "tiny":
        from asarg.tiny import tiny_asarg

        # "none" still builds the tiny U-Net: it fills the seg cache, then is removed (strip_segmenter).
        return (*tiny_asarg(**arm(args), builtin_segmenter=True), False)
    dtype = getattr(torch, args.dtype)
    model_type = AutoConfig.from_pretrained(args.model_name_or_path).model_type
    if model_type == "asarg":
        model = AutoModelForImageTextToText.from_pretrained(args.model_name_or_path, dtype=dtype)
        for name in ("use_seg_features", "use_seg_maps"):
            wanted = getattr(args, name)
            if wanted is not None and wanted != getattr(model.config, name):
                raise ValueError(
                    f"{name}={wanted} but the checkpoint has {getattr(model.config, name)}; an arm is "
                    "fixed by the projector's width: grow a new one from LLaVA instead"
                )
        return model, AutoProcessor.from_pretrained(args.model_name_or_path), True
    if model_type != "llava":
        raise ValueError(f"{args.model_name_or_path} is a {model_type!r} checkpoint; expected asarg, llava or 'tiny'")
    logger.warning(
        "Growing ASaRG from LLaVA: the built-in segmenter starts from RANDOM weights. For the paper's CXAS "
        "use `asarg convert-cxas WEIGHTS --llava %s --out DIR` and train from DIR.",
        args.model_name_or_path,
    )
    model = AsargForConditionalGeneration.from_llava(
        args.model_name_or_path, llava_kwargs={"dtype": dtype}, **arm(args), **seg_kwargs(args)
    )
    return model, asarg_processor(model, args.model_name_or_path), False


def strip_segmenter(model, processor) -> None:
    """The `none` arm: the model keeps no segmenter and the processor stops producing its input."""
    model.model.segmenter = None
    model.config.segmenter_config = None
    processor.seg_image_size = None


def lora_config(args: AsargModelArguments, model):
    from peft import LoraConfig

    # PEFT full-matches a string target against every module name: check it touches only the language model, so
    # LoRA never lands on the vision tower's or the segmenter's own q_proj/conv layers.
    hits = [n for n, _ in model.named_modules() if re.fullmatch(args.lora_target_modules, n)]
    if not hits or any("language_model" not in n for n in hits):
        raise ValueError(f"lora_target_modules must match language-model modules only; it matches {hits[:5]}")
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        modules_to_save=args.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


# ---- Dataset ---------------------------------------------------------------------------------------------------------


def load_data(args: ScriptArguments):
    kw = {"prompt": args.prompt} if args.prompt else {}
    if not args.dataset_path:
        raise ValueError("dataset_path is required (a SynthCXR dir, annotation.json, MIMIC-CXR-JPG root or JSONL)")
    if args.dataset_format == "synthcxr":
        if args.report_section != "findings":
            raise ValueError("SynthCXR reports are findings only; use report_section=findings")
        from asarg.processing.synthcxr.dataset import load_synthcxr

        return load_synthcxr(args.dataset_path, **kw)
    if args.dataset_format == "r2gen":
        from asarg.processing.loaders.r2gen import load_r2gen

        if not args.image_root:
            raise ValueError("dataset_format=r2gen needs image_root (the folder image_path entries are relative to)")
        return load_r2gen(args.dataset_path, args.image_root, section=args.report_section, **kw)
    if args.dataset_format == "mimic-cxr-jpg":
        from asarg.processing.loaders.mimic_cxr_jpg import load_mimic_cxr_jpg

        return load_mimic_cxr_jpg(args.dataset_path, reports_dir=args.reports_dir, section=args.report_section, **kw)
    if args.dataset_format == "jsonl":
        from asarg.processing.loaders.jsonl import load_jsonl

        return load_jsonl(args.dataset_path, section=args.report_section, **kw)
    raise ValueError(f"dataset_format={args.dataset_format!r}; use one of {FORMATS}")


def split(data, name: str, limit: int | None):
    if name not in data:
        raise ValueError(f"split {name!r} not in the dataset (it has {list(data)})")
    ds = data[name]
    ds = ds.select(range(min(limit, len(ds)))) if limit else ds
    # Only what the collator reads: the loaders' `labels` (CheXpert dict) etc. would otherwise reach the batch,
    # because remove_unused_columns=False switches TRL's column filter off.
    return ds.select_columns(["images", "messages"])


# ---- Training --------------------------------------------------------------------------------------------------------


def resume_target(value: str | None, output_dir: str):
    """SFTConfig.resume_from_checkpoint: None/false = fresh, true = latest checkpoint in output_dir, else a path."""
    if value is None or str(value).lower() == "false":
        return None
    if str(value).lower() == "true":
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint=true but {output_dir} holds no checkpoint-* folder")
        return last
    if not os.path.isdir(value):
        raise ValueError(f"resume_from_checkpoint={value!r} is not a directory")
    return value


def main(script_args: ScriptArguments, training_args: SFTConfig, model_args: AsargModelArguments) -> SFTTrainer:
    if training_args.remove_unused_columns:
        raise ValueError(
            "remove_unused_columns=True would drop the seg columns (seg_cache_keys, seg_maps, "
            "seg_features) before the collator sees them; ASaRG recipes need False"
        )
    if model_args.segmenter == "none" and not script_args.seg_cache_dir:
        raise ValueError("segmenter=none needs seg_cache_dir: without a segmenter the seg inputs come from the cache")
    resume = resume_target(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)  # the random parts (tiny model, a grown segmenter) must match on resume and ranks

    model, processor, on_disk = load_model(model_args)
    if model_args.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    data = load_data(script_args)
    train = split(data, script_args.dataset_train_split, script_args.max_train_samples)
    evaluate = training_args.eval_strategy != "no"
    evals = split(data, script_args.dataset_test_split, script_args.max_eval_samples) if evaluate else None

    collator = None
    if script_args.seg_cache_dir:
        from asarg.processing.seg_cache import SegCache
        from asarg.processing.seg_collator import AsargSegCacheCollator

        # Its own processor copy: strip_segmenter below must not stop the cache from preparing segmenter input.
        cache = SegCache(script_args.seg_cache_dir, model, copy.deepcopy(processor))
        with training_args.main_process_first(desc="segmentation cache"):
            train = cache.add_to_dataset(train)
            evals = cache.add_to_dataset(evals) if evals is not None else None
        collator = AsargSegCacheCollator(processor, seg_cache=cache, max_length=training_args.max_length)
    if model_args.segmenter == "none":
        strip_segmenter(model, processor)  # a cache entry evicted mid-run can then no longer be recomputed

    peft_config = lora_config(model_args, model) if model_args.use_peft else None
    if peft_config is not None and not on_disk and training_args.should_save:
        # The adapter alone cannot rebuild a base that exists only here (tiny, or grown with a random segmenter).
        model.save_pretrained(os.path.join(training_args.output_dir, "base_model"))
        processor.save_pretrained(os.path.join(training_args.output_dir, "base_model"))
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # full model (Hub files + auto_map) or, with PEFT, the adapter
    if training_args.should_save:
        processor.save_pretrained(training_args.output_dir)
    return trainer


def make_parser() -> TrlParser:
    parser = TrlParser((ScriptArguments, SFTConfig, AsargModelArguments))
    # TRL's default (True) keeps only images/messages for vision datasets and silently drops every seg column, so
    # the recipe default is False; YAML and command line can still say True, which main() then rejects.
    parser.set_defaults(remove_unused_columns=False)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
