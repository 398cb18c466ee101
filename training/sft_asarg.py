"""Supervised fine-tuning of ASaRG with TRL's SFTTrainer: a declarative recipe, all hyper-parameters in YAML.

    python training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml       # CPU, < 1 minute
    python -m asarg.training.sft_asarg --config RECIPE.yaml                              # the installed package
    torchrun --nproc_per_node 2 training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml  # DDP, CPU
    accelerate launch --config_file training/accelerate/ddp.yaml training/sft_asarg.py --config RECIPE.yaml  # GPUs

The arguments are TRL's (`ScriptArguments`, `SFTConfig`, `ModelConfig`) plus ASaRG's fields below; any YAML key can
be overridden on the command line (`--dataset_name DIR --output_dir OUT --max_steps 3`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field

from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from asarg.processing.loaders import LOADERS, load_dataset_by_format
from asarg.training.model_setup import SEGMENTERS, check_lora_targets, load_model, strip_segmenter
from modeling_asarg import AsargConfig


@dataclass
class AsargScriptArguments(ScriptArguments):
    """TRL's data arguments; `dataset_name` is the dataset's path, read by the `dataset_format` loader."""

    dataset_format: str = field(default="synthcxr", metadata={"help": "The loader.", "choices": list(LOADERS)})
    report_section: str = field(default="findings", metadata={"help": "findings or findings+impression."})
    image_dir: str | None = field(default=None, metadata={"help": "r2gen: the folder image_path is relative to."})
    reports_dir: str | None = field(default=None, metadata={"help": "mimic-cxr-jpg: the MIMIC-CXR report files."})
    prompt: str | None = field(default=None, metadata={"help": "User prompt; default: the loaders' prompt."})
    dataset_test_split: str = field(default="validation", metadata={"help": "The loaders' evaluation split."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    seg_cache_dir: str | None = field(default=None, metadata={"help": "Run the segmenter once per image into it."})


@dataclass
class AsargModelConfig(ModelConfig):
    """TRL's model arguments; `model_name_or_path` is an ASaRG or LLaVA checkpoint (grown with `from_llava`) or
    `tiny`. The segmenter sizes apply to a new built-in U-Net; their defaults are AsargConfig's."""

    use_seg_features: bool | None = field(default=None, metadata={"help": "The arm; None: the checkpoint's or on."})
    use_seg_maps: bool | None = field(default=None, metadata={"help": "The arm; None: the checkpoint's or on."})
    segmenter: str = field(default="builtin", metadata={"help": "none needs seg_cache_dir.", "choices": SEGMENTERS})
    cxas_groups: str | None = field(default=None, metadata={"help": "cxas: 'anatomy' merges classes into groups."})
    cxas_feature_level: str | None = field(default=None, metadata={"help": "cxas: the map the projector reads."})
    num_seg_classes: int = field(default=AsargConfig.num_seg_classes, metadata={"help": "builtin: maps (K)."})
    seg_feature_channels: int = field(default=AsargConfig.seg_feature_channels, metadata={"help": "builtin: C."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "LLaVA-1.5 keeps CLIP frozen."})


def split(data, name: str, limit: int | None):
    if name not in data:
        raise ValueError(f"split {name!r} not in the dataset (it has {list(data)})")
    ds = data[name].select(range(min(limit, len(data[name])))) if limit else data[name]
    # Only what the collator reads: remove_unused_columns=False switches TRL's column filter off.
    return ds.select_columns(["images", "messages"])


def resume_target(value: str | None, output_dir: str) -> str | None:
    """SFTConfig.resume_from_checkpoint: None/false = fresh, true = the latest checkpoint in output_dir (found here,
    before any model is loaded), else a checkpoint path."""
    if str(value).lower() in ("none", "false"):
        return None
    if str(value).lower() != "true":
        return value
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if last is None:
        raise ValueError(f"resume_from_checkpoint=true but {output_dir} holds no checkpoint-* folder")
    return last


def with_seg_cache(cache_dir, model, processor, training_args, train, evals):
    """(train, evals, collator): the datasets gain seg-cache keys, filled once (rank 0 first) by the segmenter."""
    from asarg.processing.seg_cache import SegCache
    from asarg.processing.seg_collator import AsargSegCacheCollator

    # Its own processor copy: strip_segmenter must not stop the cache from preparing segmenter input.
    cache = SegCache(cache_dir, model, copy.deepcopy(processor))
    with training_args.main_process_first(desc="segmentation cache"):
        train = cache.add_to_dataset(train)
        evals = cache.add_to_dataset(evals) if evals is not None else None
    return train, evals, AsargSegCacheCollator(processor, seg_cache=cache, max_length=training_args.max_length)


def check_arguments(script_args, training_args, model_args) -> None:
    if training_args.remove_unused_columns:
        raise ValueError(
            "remove_unused_columns=True would drop the seg columns (seg_cache_keys, seg_maps, seg_features) before "
            "the collator sees them; ASaRG recipes need False"
        )
    if model_args.segmenter == "none" and not script_args.seg_cache_dir:
        raise ValueError("segmenter=none needs seg_cache_dir: without a segmenter the seg inputs come from the cache")
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ValueError("quantised loading is not supported: the projector grows and the segmenter runs in full")
    if not script_args.dataset_name:
        raise ValueError(f"dataset_name is required: the path of a dataset in one of the formats {list(LOADERS)}")


def load_splits(script_args: AsargScriptArguments, evaluate: bool):
    options = {"section": script_args.report_section, "prompt": script_args.prompt}
    options |= {"image_dir": script_args.image_dir, "reports_dir": script_args.reports_dir}
    options = {k: v for k, v in options.items() if v is not None}
    data = load_dataset_by_format(script_args.dataset_format, script_args.dataset_name, **options)
    train = split(data, script_args.dataset_train_split, script_args.max_train_samples)
    return train, split(data, script_args.dataset_test_split, script_args.max_eval_samples) if evaluate else None


def main(script_args: AsargScriptArguments, training_args: SFTConfig, model_args: AsargModelConfig) -> SFTTrainer:
    check_arguments(script_args, training_args, model_args)
    resume = resume_target(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)  # the random parts (tiny model, a grown segmenter) must match on resume and ranks

    model, processor, on_disk = load_model(model_args)
    train, evals = load_splits(script_args, evaluate=training_args.eval_strategy != "no")
    collator = None
    if script_args.seg_cache_dir:
        train, evals, collator = with_seg_cache(
            script_args.seg_cache_dir, model, processor, training_args, train, evals
        )
    if model_args.segmenter == "none":
        strip_segmenter(model, processor)  # a cache entry evicted mid-run can then no longer be recomputed

    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        check_lora_targets(peft_config, model)
        if not on_disk and training_args.should_save:  # an adapter alone cannot rebuild a base that exists only here
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
    trainer.save_model(training_args.output_dir)  # the processor, and the model (Hub files + auto_map) or adapter
    return trainer


def make_parser() -> TrlParser:
    parser = TrlParser((AsargScriptArguments, SFTConfig, AsargModelConfig))
    # TRL's default (True) keeps only images/messages and drops every seg column: the recipe default is False;
    # YAML and command line can still say True, which main() then rejects.
    parser.set_defaults(remove_unused_columns=False)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config()).end()  # end: finish the trackers, leave the process group
