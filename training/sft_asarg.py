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
import difflib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from asarg.evaluation.report_labeler import CHEXPERT_LABELS
from asarg.evaluation.report_labeler.findings import finding_label_rows, findings_first
from asarg.processing.atomic import atomic_write
from asarg.processing.checkpoints import write_checksums
from asarg.processing.loaders import LOADERS, load_dataset_by_format
from asarg.processing.outputs import OutputError, check_output_dir, read_marker, write_marker
from asarg.training.checkpoints import checkpoint_problem, latest_complete_checkpoint
from asarg.training.finding_alignment import align_findings
from asarg.training.model_setup import (
    SEGMENTERS,
    check_lora_targets,
    has_finding_head,
    load_model,
    strip_segmenter,
)
from modeling_asarg import AsargConfig

REPORT_ORDERS = ("as_written", "findings_first")


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
    finding_balance: float = field(
        default=0.0,
        metadata={
            "help": "Oversample studies with rarer findings: each study is drawn with weight (frequency of its rarest "
            "positive finding) ** -finding_balance, with replacement, to the same size; 0 = off."
        },
    )
    finding_alignment_epochs: int = field(
        default=0,
        metadata={
            "help": "With new finding tokens: first train the projector and their classifier on the findings alone "
            "(no language model) for up to this many epochs, early-stopped on a tenth of the training studies, which "
            "also set each finding's threshold; 0 = off."
        },
    )
    report_order: str = field(
        default="as_written",
        metadata={
            "help": "The training reports' sentence order: as_written, or findings_first (support devices, then other "
            "asserted findings, then the rest; stable within each group). Evaluation reports stay as written.",
            "choices": list(REPORT_ORDERS),
        },
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Raise on the first unusable record (missing or broken image, ...) instead of skipping it."},
    )


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
    finding_tokens: bool | None = field(
        default=None,
        metadata={
            "help": "Finding tokens: the finding loss trains a classifier whose verdicts the language model reads as "
            "one extra image token per finding (needs finding_loss_weight > 0); None: the checkpoint's."
        },
    )
    finding_sides: list[str] | None = field(
        default=None,
        metadata={
            "help": "With new finding tokens: one-sided CheXpert observations that also get a finding token per side "
            "(right, left), read from the side words of the report's sentences; 'all' for every one-sided "
            "observation; None: the checkpoint's."
        },
    )
    finding_side_gate: bool | None = field(
        default=None,
        metadata={
            "help": "With finding_sides: each sided finding token pools only the patches of its side's anatomy (the "
            "seg maps named right / left); None: the checkpoint's."
        },
    )
    finding_token_label_rate: float | None = field(
        default=None,
        metadata={
            "help": "Verdict forcing: the probability that a training sample's finding tokens come from its finding "
            "labels instead of the classifier's verdicts (0 = off); None: the checkpoint's."
        },
    )
    finding_loss_weight: float | None = field(
        default=None,
        metadata={
            "help": "Auxiliary multi-label loss on the projected image tokens (0 = off); None: the checkpoint's."
        },
    )
    seg_group_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Probability that each anatomical group of maps (and the features it covers) is removed from a "
            "training sample (0 = off); None: the checkpoint's."
        },
    )
    seg_all_maps_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Probability that all maps of a training sample are removed (0 = off); None: the checkpoint's."
        },
    )


def split(data, name: str, limit: int | None):
    if name not in data:
        raise ValueError(f"split {name!r} not in the dataset (it has {list(data)})")
    ds = data[name].select(range(min(limit, len(data[name])))) if limit is not None else data[name]
    # Only what the collator reads: remove_unused_columns=False switches TRL's column filter off.
    return ds.select_columns(["images", "messages"])


def with_report_order(ds, order: str):
    """`ds` with each report's sentences in `order` (`REPORT_ORDERS`; `findings_first`: `findings.findings_first`)."""
    if order not in REPORT_ORDERS:
        raise ValueError(f"report_order={order!r}: choose one of {list(REPORT_ORDERS)}.")
    if order == "as_written":
        return ds

    def reorder(batch):
        reports = findings_first([messages[-1]["content"][-1]["text"] for messages in batch["messages"]])
        for messages, report in zip(batch["messages"], reports, strict=True):
            messages[-1]["content"][-1]["text"] = report
        return {"messages": batch["messages"]}

    return ds.map(reorder, batched=True, batch_size=1000, desc="report order")


def with_finding_labels(ds, sides: Sequence[str] = ()):
    """`finding_labels`: the 14 CheXpert observations of each study's report, read by the project's labeler (as
    CE-F1 reads them), then the right and left of each of `sides` (`finding_label_rows`): 1 present, 0 absent or not
    mentioned, -1 uncertain or unknown (ignored by the loss)."""

    def label(batch):
        reports = [messages[-1]["content"][-1]["text"] for messages in batch["messages"]]
        return {"finding_labels": finding_label_rows(reports, sides).tolist()}

    return ds.map(label, batched=True, batch_size=1000, desc="finding labels")


def init_finding_head(model, ds) -> None:
    """A new finding head starts from the training prevalences (bias = their log-odds) with weights of std
    hidden ** -0.5. Measured (docs/results/report_recipe): from LLaVA's default init (bias 0, std 0.02) the head's
    loss stayed at ln 2 for 800 steps at lr 1e-3 (Adam moves it about lr per step) and taught the projector nothing
    (R1); from the prevalences with zero weights (R1b) its loss started at 0.33 but the projector's gradient, which
    passes through the head's weights, was zero at the start and stayed negligible: reports identical to the
    control again. Weights of unit-variance output give the projector a gradient from the first step (not yet
    screened)."""
    labels = np.asarray(ds["finding_labels"])
    known = (labels >= 0).sum(0).clip(min=1)
    prevalence = ((labels == 1).sum(0) / known).clip(1e-3, 1 - 1e-3)
    head = model.finding_head if model.finding_head is not None else model.model.finding_tokens
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(np.log(prevalence / (1 - prevalence))))
        head.weight.normal_(0.0, head.weight.shape[-1] ** -0.5)


def align_and_record(model, processor, ds, epochs: int, training_args) -> None:
    """The finding alignment stage (`finding_alignment.py`) on the training studies; its record goes beside the run."""
    if model.model.segmenter is None and model.config.seg_input_width:
        raise ValueError(
            "finding_alignment_epochs runs the model's own segmenter on the training images; this model has none "
            "(segmenter=none): train without finding alignment."
        )
    images = [row[0] for row in ds["images"]]
    record = align_findings(
        model,
        processor,
        images,
        ds["finding_labels"],
        epochs,
        learning_rate=training_args.learning_rate,
        seed=training_args.seed,
    )
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        path = os.path.join(training_args.output_dir, "finding_alignment.json")
        atomic_write(path, json.dumps(record, indent=1).encode())


def balance_by_findings(ds, alpha: float, seed: int):
    """`ds` resampled with replacement to its own size, each study drawn with weight (frequency of its rarest positive
    CheXpert observation; sides do not count) ** -alpha, so rare findings are seen more often; 0 returns `ds` as it
    is."""
    if alpha == 0:
        return ds
    labels = np.asarray(ds["finding_labels"])[:, : len(CHEXPERT_LABELS)] == 1
    frequency = labels.mean(0).clip(min=1.0 / len(ds))
    rarest = np.where(labels, frequency, np.inf).min(1)
    weight = np.where(np.isfinite(rarest), rarest, frequency.max()) ** -alpha
    rows = np.random.default_rng(seed).choice(len(ds), size=len(ds), p=weight / weight.sum())
    return ds.select(np.sort(rows))


@dataclass
class FindingLabelCollator:
    """Wraps a collator: each example's `finding_labels` row goes into the batch as a float tensor."""

    collator: Any

    def __call__(self, examples: list[dict]) -> dict:
        examples = [dict(example) for example in examples]
        rows = [example.pop("finding_labels") for example in examples]
        batch = self.collator(examples)
        batch["finding_labels"] = torch.tensor(rows, dtype=torch.float32)
        return batch


class AsargSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer plus the model's auxiliary finding loss.

    TRL scores the language model with its fused LM head: it calls the backbone (`AsargModel`) directly and returns
    only per-token outputs, so `AsargForConditionalGeneration.forward` -- where the finding loss lives for plain
    `transformers` use -- never runs in the step, and `return_outputs=True` would only add a second forward without
    gradients. Here the backbone's own output (`image_outputs`, the projected image tokens of the step's forward) is
    kept with a forward hook and the finding loss computed from it, so it reaches the head and the projector.
    `finding_loss_weight * finding_loss` is divided over gradient-accumulation steps, as TRL does with a router's
    auxiliary loss. The finding labels also go to the backbone (a forward pre-hook), for verdict forcing."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        finding_labels = inputs.pop("finding_labels", None)
        if finding_labels is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        asarg = self.accelerator.unwrap_model(model)
        asarg = asarg.get_base_model() if hasattr(asarg, "get_base_model") else asarg  # under PEFT
        images = []
        hook = asarg.model.register_forward_hook(lambda module, args, output: images.append(output.image_outputs))
        # The labels reach the backbone too, which forces the finding tokens with them (`finding_token_label_rate`)
        labels_in = asarg.model.register_forward_pre_hook(
            lambda module, args, kwargs: (args, {**kwargs, "finding_labels": finding_labels}), with_kwargs=True
        )
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            hook.remove()
            labels_in.remove()
        loss = result[0] if return_outputs else result
        _, finding_loss = asarg.finding_loss(images[0], finding_labels)  # [0]: the forward with gradients
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        loss = loss + asarg.config.finding_loss_weight * finding_loss / steps
        mode = "train" if self.model.training else "eval"
        logged = self.accelerator.gather_for_metrics(finding_loss.detach()).mean().item()
        self._metrics[mode]["finding_loss"].append(logged)  # logged beside TRL's entropy and token accuracy
        return (loss, result[1]) if return_outputs else loss


def resume_target(value: str | None, output_dir: str, save_only_model: bool = False) -> str | None:
    """SFTConfig.resume_from_checkpoint: None/false = fresh, true = the newest *complete* checkpoint in output_dir
    (a newer one cut off by a crash is skipped with a warning), else a checkpoint path, which must be complete.
    Found here, before any model is loaded, so a bad choice costs seconds, not a model load."""
    if str(value).lower() in ("none", "false"):
        return None
    if str(value).lower() == "true":
        return latest_complete_checkpoint(output_dir, save_only_model)
    problem = checkpoint_problem(value, save_only_model)
    if problem:
        raise ValueError(f"resume_from_checkpoint={value} cannot be resumed from: {problem}")
    return value


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
    check_counts(script_args, training_args)
    if os.path.exists(training_args.output_dir) and not os.path.isdir(training_args.output_dir):
        raise ValueError(f"output_dir={training_args.output_dir} is a file; give a folder (new or a run's own)")
    if training_args.process_index == 0:  # one rank checks and marks: the others would race its marker's write
        check_output_folder(script_args, training_args, model_args)


def check_output_folder(script_args, training_args, model_args) -> None:
    """output_dir is never an input nor a folder holding one (or the working directory); a non-empty one must be a
    run folder an asarg command set up (its marker: this recipe's, `finetune`'s or `reproduce`'s), since the Trainer
    writes, and with save_total_limit deletes, `checkpoint-*` folders there; or one the user asked to resume
    (`resume_from_checkpoint`). Marked as this recipe's on first use."""
    inputs = [script_args.dataset_name, model_args.model_name_or_path]
    inputs = [path for path in inputs if path and os.path.exists(path)]
    out = check_output_dir(training_args.output_dir, inputs, command="sft", overwrite=True, what="output_dir")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    resuming = str(training_args.resume_from_checkpoint).lower() not in ("none", "false")
    if held and read_marker(out) is None and not resuming:
        raise OutputError(
            f"output_dir={out} is not empty and was not set up by asarg ({', '.join(held[:5])}): the Trainer would "
            "write its checkpoints among those files and rotate away old ones. Give a new or empty folder, or "
            "resume_from_checkpoint to continue a run of yours there."
        )
    if not held:
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "sft", dataset=str(script_args.dataset_name), model=str(model_args.model_name_or_path))


def check_counts(script_args, training_args) -> None:
    """Counts whose 0 the libraries read as 'no limit' or 'one step': here they are errors, before any model loads."""
    if training_args.max_steps == 0:
        raise ValueError(
            "max_steps=0 would still run a training step and save the model as trained; give a positive number "
            "of steps, or -1 to train num_train_epochs epochs"
        )
    if script_args.finding_alignment_epochs < 0:
        raise ValueError(f"finding_alignment_epochs={script_args.finding_alignment_epochs}; give 0 (off) or more")
    for name in ("max_train_samples", "max_eval_samples"):
        value = getattr(script_args, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name}={value} would use every sample (0 reads as 'no limit'); give a positive number")


def load_splits(script_args: AsargScriptArguments, evaluate: bool):
    options = {"section": script_args.report_section, "prompt": script_args.prompt}
    options |= {"image_dir": script_args.image_dir, "reports_dir": script_args.reports_dir}
    options = {k: v for k, v in options.items() if v is not None} | ({"strict": True} if script_args.strict else {})
    data = load_dataset_by_format(script_args.dataset_format, script_args.dataset_name, **options)
    train = split(data, script_args.dataset_train_split, script_args.max_train_samples)
    return train, split(data, script_args.dataset_test_split, script_args.max_eval_samples) if evaluate else None


def main(script_args: AsargScriptArguments, training_args: SFTConfig, model_args: AsargModelConfig) -> SFTTrainer:
    check_arguments(script_args, training_args, model_args)
    resume = resume_target(
        training_args.resume_from_checkpoint, training_args.output_dir, training_args.save_only_model
    )
    if not os.path.exists(script_args.dataset_name):  # named here, before any model loads
        raise ValueError(f"dataset_name={script_args.dataset_name}: no such file or folder; check the path")
    set_seed(training_args.seed)  # the random parts (tiny model, a grown segmenter) must match on resume and ranks

    model, processor, on_disk = load_model(model_args)
    train, evals = load_splits(script_args, evaluate=training_args.eval_strategy != "no")
    train = with_report_order(train, script_args.report_order)
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
            write_checksums(os.path.join(training_args.output_dir, "base_model"))
    findings = model.config.finding_loss_weight > 0
    if findings or script_args.finding_balance:
        sides = model.config.finding_sides or ()
        train = with_finding_labels(train, sides)
        new_head = model_args.finding_loss_weight is not None and not has_finding_head(
            model_args.model_name_or_path, model_args.model_revision, tokens=model.config.finding_tokens
        )
        if findings and new_head and resume is None:
            init_finding_head(model, train)
            if script_args.finding_alignment_epochs:
                align_and_record(model, processor, train, script_args.finding_alignment_epochs, training_args)
        train = balance_by_findings(train, script_args.finding_balance, training_args.seed)
        evals = with_finding_labels(evals, sides) if evals is not None else None
        if not findings:
            train = train.remove_columns("finding_labels")
    data = {"train_dataset": train, "eval_dataset": evals, "data_collator": collator}
    trainer = AsargSFTTrainer(
        model=model, args=training_args, processing_class=processor, peft_config=peft_config, **data
    )
    if findings:
        trainer.data_collator = FindingLabelCollator(trainer.data_collator)
    trainer.add_callback(ChecksumCallback())
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # the processor, and the model (Hub files + auto_map) or adapter
    if training_args.should_save:
        write_checksums(training_args.output_dir)  # last: it covers every file the model loads from
    return trainer


class ChecksumCallback(TrainerCallback):
    """Write `checksums.sha256` into every checkpoint the Trainer saves, so a damaged one fails verification."""

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if args.should_save and os.path.isdir(folder):
            write_checksums(folder)


class RecipeParser(TrlParser):
    """TrlParser whose unknown keys, in the YAML or on the command line, are an error naming each key and the closest
    valid one. TRL's own message names the key only, and only after every dataclass is built, so an unrelated
    __post_init__ error (bf16 on a CPU, ...) can hide the typo."""

    def known_keys(self) -> list[str]:
        """Every recipe key: the init fields of the parser's dataclasses (HfArgumentParser's `dataclass_types`)."""
        return sorted({f.name for kind in self.dataclass_types for f in fields(kind) if f.init})

    def unknown_keys_error(self, keys: list[str], where: str) -> ValueError:
        known = self.known_keys()
        named = []
        for key in keys:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return ValueError(
            f"unknown {where} key(s): {', '.join(named)}; fix the spelling or remove the key "
            "(`python training/sft_asarg.py --help` lists every valid one)"
        )

    def set_defaults_with_config(self, **kwargs) -> list[str]:
        known = set(self.known_keys())
        unknown = [key for key in kwargs if key not in known]
        if unknown:
            raise self.unknown_keys_error(unknown, "recipe (YAML)")
        return super().set_defaults_with_config(**kwargs)

    def parse_args_into_dataclasses(self, args=None, **kwargs):
        _, rest = self.parse_known_args(args)
        unknown = [a[2:].split("=")[0] for a in rest if a.startswith("--")]
        if unknown and not kwargs.get("return_remaining_strings"):
            raise self.unknown_keys_error(unknown, "command-line")
        return super().parse_args_into_dataclasses(args=args, **kwargs)


def make_parser() -> TrlParser:
    parser = RecipeParser((AsargScriptArguments, SFTConfig, AsargModelConfig))
    # TRL's default (True) keeps only images/messages and drops every seg column: the recipe default is False;
    # YAML and command line can still say True, which main() then rejects.
    parser.set_defaults(remove_unused_columns=False)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trainer = main(*make_parser().parse_args_and_config())
    trainer.accelerator.wait_for_everyone()
    # Not under torch.distributed: end() destroys the process group while DDP still holds it, and on CPU (gloo) the
    # group's destructor can then deadlock with its own worker threads at exit (seen with gdb on a rank).
    if trainer.args.world_size == 1:
        trainer.end()  # finish the trackers
