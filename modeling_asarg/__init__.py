"""ASaRG model package.

The three `*_asarg.py` files are the Hub remote-code folder: `save_pretrained` copies them next to the weights.
This `__init__` is NOT uploaded: it registers the classes with the Auto API for in-process use and marks them for
export, so every `save_pretrained` (Trainer checkpoints included) writes `auto_map` and the three files.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_asarg import (
    CXAS_ANATOMY_GROUPS,
    CXAS_CLASS_NAMES,
    CXAS_FEATURE_LEVELS,
    AsargConfig,
    AsargSegmenterConfig,
    cxas_seg_config,
    cxas_segmenter_config,
    default_segmenter_config,
    llava_config_kwargs,
)
from .modeling_asarg import (
    AsargCxasUNetSegmenter,
    AsargForConditionalGeneration,
    AsargModel,
    AsargMultiModalProjector,
    AsargPreTrainedModel,
    AsargSegLinear,
    AsargUNetSegmenter,
    build_segmenter,
)
from .processing_asarg import AsargProcessor, finding_token_count

AutoConfig.register("asarg", AsargConfig, exist_ok=True)
# AutoModel gives the generating model (as for InternVL, MiniCPM-V): `AutoModel.from_pretrained("org/asarg",
# trust_remote_code=True)` must write reports. The base model stays reachable as `model.model` (AsargModel).
AutoModel.register(AsargConfig, AsargForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(AsargConfig, AsargForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AsargConfig, AsargProcessor, exist_ok=True)

AsargConfig.register_for_auto_class()
AsargForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
AsargProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "CXAS_ANATOMY_GROUPS",
    "CXAS_CLASS_NAMES",
    "CXAS_FEATURE_LEVELS",
    "AsargCxasUNetSegmenter",
    "AsargConfig",
    "AsargForConditionalGeneration",
    "AsargModel",
    "AsargMultiModalProjector",
    "AsargPreTrainedModel",
    "AsargProcessor",
    "finding_token_count",
    "AsargSegLinear",
    "AsargSegmenterConfig",
    "AsargUNetSegmenter",
    "build_segmenter",
    "cxas_seg_config",
    "cxas_segmenter_config",
    "default_segmenter_config",
    "llava_config_kwargs",
]
