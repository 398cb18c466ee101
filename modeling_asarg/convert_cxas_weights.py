"""Convert a CXAS or torchxrayvision checkpoint into ASaRG's CXAS-compatible segmenter (the `asarg convert-cxas`
command, `asarg.convert_cxas`, is its command line).

The paper's specialist is CXAS (`UNet_ResNet50_default`, 159 anatomy classes). Its weights are published by
cxas (Google Drive, `~/.cxas/weights/UNet_ResNet50_default.pth`) and torchxrayvision (GitHub release asset
`baseline_models_cxas_UNet_ResNet50_default_repack.pth`). Both tools load them with `strict=False`, so a wrong file
silently leaves random layers; this converter refuses instead:

* the file is read with `torch.load(weights_only=True)` (no pickled code runs);
* containers are unwrapped (`{"model": sd}`, `{"state_dict": sd}`, ...) and `module.` / `model.` / `net.` prefixes
  dropped; torchxrayvision's repack stores the encoder as `backbone.layerN`, which maps to CXAS's
  `backbone.backbone.layerN`. Nothing else is renamed: `AsargCxasUNetSegmenter` uses CXAS's parameter names;
* every missing, unexpected or wrongly shaped key is an error that lists them;
* output is safetensors, written atomically (temporary file + `os.replace`).

Outputs, in `--out DIR`: `segmenter.safetensors` + `segmenter_config.json` (the `segmenter_config` with the class
names and where the weights came from). With `--llava PATH` (a LLaVA checkpoint) or `--asarg PATH` (an ASaRG
checkpoint) the directory also gets a complete ASaRG checkpoint whose built-in segmenter holds these weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from modeling_asarg import (
    AsargConfig,
    AsargForConditionalGeneration,
    AsargSegmenterConfig,
    build_segmenter,
    cxas_segmenter_config,
)

SEGMENTER_WEIGHTS = "segmenter.safetensors"
SEGMENTER_CONFIG = "segmenter_config.json"
_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "network", "net")
_PREFIXES = ("module.", "model.", "net.")
_ENCODER_STAGES = tuple(f"backbone.layer{i}." for i in range(5))
_MAX_LISTED = 20


# ---- reading ---------------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The raw state dict in a `.pth` file: `torch.load(weights_only=True)`, containers unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(error).__name__}: {error}). Pass the "
            "CXAS / torchxrayvision .pth file itself; checkpoints that need arbitrary pickled objects are refused."
        ) from error
    return unwrap_state_dict(checkpoint, str(path))


def unwrap_state_dict(checkpoint, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in _CONTAINER_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(f"{source}: expected a state dict (name -> tensor), got {type(checkpoint).__name__}.")
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: entries that are not tensors: {not_tensors[:_MAX_LISTED]}.")
    return dict(checkpoint)


def map_cxas_key(key: str) -> str:
    """A CXAS / torchxrayvision parameter name -> the `AsargCxasUNetSegmenter` name (explicit, documented rules)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    if key.startswith(_ENCODER_STAGES):  # torchxrayvision's repack: encoder one level less deep
        key = "backbone." + key
    return key


# ---- converting ------------------------------------------------------------------------------------------------------


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], segmenter: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map `state_dict` onto `segmenter`'s names; raise ValueError listing every unmatched key or shape."""
    mapped: dict[str, torch.Tensor] = {}
    collisions = []
    for key, value in state_dict.items():
        new_key = map_cxas_key(key)
        if new_key in mapped:
            collisions.append(key)
        mapped[new_key] = value
    expected = segmenter.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs segmenter {tuple(expected[k].shape)}"
        for k in expected
        if k in mapped and mapped[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", shapes),
        ("duplicate after prefix stripping", collisions),
    ):
        if items:
            problems.append(f"{len(items)} {label}: {items[:_MAX_LISTED]}{' ...' if len(items) > _MAX_LISTED else ''}")
    if problems:
        raise ValueError(
            "The checkpoint does not match the CXAS U-Net (UNet_ResNet50_default) key for key:\n  "
            + "\n  ".join(problems)
            + "\nIs this a CXAS / torchxrayvision chestx_anatomy checkpoint? Nothing was written."
        )
    return {k: mapped[k].detach().to(expected[k].dtype).contiguous() for k in expected}


def infer_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int:
    for key, value in state_dict.items():
        if map_cxas_key(key) == "head.out.conv.weight":
            return int(value.shape[0])
    raise ValueError("The checkpoint has no classifier (`head.out.conv.weight`); it is not a CXAS U-Net checkpoint.")


def convert_checkpoint(
    path: str | os.PathLike, feature_level: str = "feats", class_names: list[str] | None = None
) -> tuple[AsargSegmenterConfig, dict[str, torch.Tensor]]:
    """Read a CXAS / torchxrayvision `.pth` file -> (`segmenter_config`, converted state dict)."""
    state_dict = load_checkpoint(path)
    num_classes = infer_num_classes(state_dict)
    if class_names is None and num_classes != 159:
        raise ValueError(
            f"The checkpoint predicts {num_classes} classes, not CXAS's 159: give their names with --class-names."
        )
    config = cxas_segmenter_config(feature_level, class_names)
    if config.num_classes != num_classes:
        raise ValueError(f"{len(config.class_names)} class names given for a {num_classes}-class checkpoint.")
    with torch.device("meta"):  # only the names and shapes are needed to check the mapping
        template = build_segmenter(config)
    converted = convert_state_dict(state_dict, template)
    config.source = {"file": Path(path).name, "sha256": _file_sha256(path)}
    return config, converted


def load_converted_segmenter(directory: str | os.PathLike) -> torch.nn.Module:
    """The segmenter written by `save_segmenter` (strict load), in eval mode, its `AsargSegmenterConfig` as `.config`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = AsargSegmenterConfig(**json.loads((directory / SEGMENTER_CONFIG).read_text()))
    segmenter = build_segmenter(config)
    segmenter.load_state_dict(load_file(directory / SEGMENTER_WEIGHTS), strict=True)
    segmenter.config = config
    return segmenter.eval()


# ---- writing ---------------------------------------------------------------------------------------------------------


def save_segmenter(
    directory: str | os.PathLike, config: AsargSegmenterConfig, state_dict: dict[str, torch.Tensor]
) -> None:
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "architecture": config.architecture, "num_classes": str(config.num_classes)}
    files = {
        SEGMENTER_WEIGHTS: save(state_dict, metadata=metadata),
        SEGMENTER_CONFIG: json.dumps(config.to_settings(), indent=2).encode(),
    }
    # Each file appears complete or not at all: written in a scratch folder beside it, then renamed into place.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".convert-") as scratch:
        for name, data in files.items():
            (Path(scratch) / name).write_bytes(data)
            os.replace(Path(scratch) / name, directory / name)


def _file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- full ASaRG checkpoints ------------------------------------------------------------------------------------------


def build_asarg_with_segmenter(
    segmenter_config: AsargSegmenterConfig,
    state_dict: dict[str, torch.Tensor],
    llava: str | None = None,
    asarg: str | None = None,
    seg_kwargs: dict | None = None,
):
    """An ASaRG model whose built-in segmenter holds `state_dict` (loaded strictly), grown from a LLaVA checkpoint
    (`llava`, with `seg_kwargs` for the seg fields) or taken from an ASaRG checkpoint (`asarg`, whose projector must
    already fit the segmenter's class selection and feature width)."""
    if (llava is None) == (asarg is None):
        raise ValueError("Give exactly one of --llava or --asarg.")
    if llava is not None:
        kwargs = {"use_seg_maps": True, "use_seg_features": True, **(seg_kwargs or {})}
        kwargs["segmenter_config"] = segmenter_config
        model = AsargForConditionalGeneration.from_llava(llava, **kwargs)
    else:
        model = AsargForConditionalGeneration.from_pretrained(asarg)
        try:  # validates the new segmenter against the projector's K and C
            config = AsargConfig.from_llava_config(model.config, segmenter_config=segmenter_config)
        except ValueError as error:
            raise ValueError(f"{asarg}: its projector does not fit the converted segmenter: {error}") from error
        model.config.segmenter_config = config.segmenter_config
        model.model.segmenter = build_segmenter(config.segmenter_config)
    segmenter = model.model.segmenter
    segmenter.load_state_dict(state_dict, strict=True)
    param = next(model.parameters())
    segmenter.to(param.device, param.dtype)
    segmenter.requires_grad_(not model.config.freeze_segmenter)
    return model


def build_processor_for(model, source: str):
    """An `AsargProcessor` from the tokenizer and image processor stored with `source`, or None when it has none."""
    from transformers import AutoProcessor

    from modeling_asarg import AsargProcessor

    try:
        base = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return None
    if not hasattr(base, "image_processor") or not hasattr(base, "tokenizer"):
        return None
    return AsargProcessor.from_llava_processor(base, model.config)
