"""Tiny ASaRG models and processors built from code, offline: for tests, smoke runs and the demo's fallback.

Everything here is randomly initialised (or trained in-process, for the tokenizer); nothing touches the Hub.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from modeling_asarg import (
    AsargConfig,
    AsargForConditionalGeneration,
    AsargProcessor,
    default_segmenter_config,
    finding_token_count,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
DEFAULT_CORPUS = [
    "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small left pleural effusion. Right lower lobe consolidation may represent pneumonia.",
    "USER: ASSISTANT: Describe the findings of this chest radiograph.",
    "Endotracheal tube and central venous catheter in place. Mild pulmonary edema. Bibasilar atelectasis.",
]


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus` with the specials LLaVA needs (`<image>` is a single token)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus or DEFAULT_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def clip_config(
    image_size: int, patch_size: int, hidden: int, layers: int, heads: int, mlp_ratio: int
) -> CLIPVisionConfig:
    """A CLIP-style ViT of these sizes (the one vision layout every model built from code uses)."""
    return CLIPVisionConfig(**_sizes(hidden, layers, heads, mlp_ratio), image_size=image_size, patch_size=patch_size)


def _sizes(hidden: int, layers: int, heads: int, mlp_ratio: int) -> dict:
    """The transformer sizes a CLIP and a Llama config name alike."""
    return {
        "hidden_size": hidden,
        "intermediate_size": hidden * mlp_ratio,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }


def llama_config(
    tokenizer, hidden: int, layers: int, heads: int, mlp_ratio: int, max_positions: int = 512, tie: bool = False
) -> LlamaConfig:
    """A Llama-style LM of these sizes over `tokenizer`'s vocabulary and special tokens."""
    return LlamaConfig(
        **_sizes(hidden, layers, heads, mlp_ratio),
        num_key_value_heads=heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def llava_config(tokenizer, vision: CLIPVisionConfig, text: LlamaConfig, **kwargs) -> LlavaConfig:
    """LLaVA over `vision` and `text`, with one image token per patch; `kwargs` are LlavaConfig's."""
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def tiny_llava_config(tokenizer, image_size: int = 32, patch_size: int = 8, hidden: int = 32) -> LlavaConfig:
    vision = clip_config(image_size, patch_size, hidden, layers=2, heads=2, mlp_ratio=2)
    return llava_config(tokenizer, vision, llama_config(tokenizer, hidden, layers=2, heads=2, mlp_ratio=2))


def tiny_asarg_config(
    tokenizer,
    use_seg_features: bool = True,
    use_seg_maps: bool = True,
    num_seg_classes: int = 4,
    seg_feature_channels: int = 8,
    builtin_segmenter: bool = True,
    seg_image_size: int = 32,
    **overrides,
) -> AsargConfig:
    segmenter = (
        default_segmenter_config(num_seg_classes, seg_feature_channels, widths=(8, 16), image_size=seg_image_size)
        if builtin_segmenter
        else None
    )
    seg_fields = {
        "use_seg_features": use_seg_features,
        "use_seg_maps": use_seg_maps,
        "num_seg_classes": num_seg_classes,
        "seg_feature_channels": seg_feature_channels,
        "segmenter_config": segmenter,
    }
    return AsargConfig.from_llava_config(tiny_llava_config(tokenizer), **{**seg_fields, **overrides})


def clip_image_processor(side: int) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def asarg_processor(tokenizer, config, image_size: int) -> AsargProcessor:
    """The processor of a model built from code: CLIP's image processor at `image_size`, the rest from `config`."""
    segmenter = getattr(config, "segmenter_config", None)
    return AsargProcessor(
        image_processor=clip_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token
        seg_image_size=segmenter.image_size if segmenter is not None else None,
        num_seg_classes=getattr(config, "num_seg_classes", None),
        num_finding_tokens=finding_token_count(config),
    )


def tiny_processor(tokenizer, config, image_size: int = 32) -> AsargProcessor:
    return asarg_processor(tokenizer, config, image_size)


def tiny_asarg(seed: int = 0, **config_kwargs) -> tuple[AsargForConditionalGeneration, AsargProcessor]:
    """A tiny ASaRG model and its processor. Seg columns are zero (as for any fresh model)."""
    import torch

    tokenizer = tiny_tokenizer()
    config = tiny_asarg_config(tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    model = AsargForConditionalGeneration(config).eval()
    return model, tiny_processor(tokenizer, config)
