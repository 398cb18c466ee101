"""Dataset loaders that turn real report datasets (R2Gen annotation.json, MIMIC-CXR-JPG, JSONL/image folders) and
SynthCXR into TRL's conversational format: `images` + `messages`, plus `id`, `report` and `labels` columns.

`load_dataset_by_format(format, path, **options)` picks the loader by name from `LOADERS`; the options are the
loader's own (`section`, `prompt`, `strict`, r2gen's `image_dir`, mimic-cxr-jpg's `reports_dir`, ...). Loader modules
are imported on first use, so importing this package does not pull in `datasets`.
"""

from __future__ import annotations

import importlib
import inspect

# format -> "module:function", the module relative to this package.
LOADERS: dict[str, str] = {
    "synthcxr": "..synthcxr.dataset:load_synthcxr",
    "r2gen": ".r2gen:load_r2gen",
    "mimic-cxr-jpg": ".mimic_cxr_jpg:load_mimic_cxr_jpg",
    "jsonl": ".jsonl:load_jsonl",
    "image-folder": ".jsonl:load_image_folder",
}


def get_loader(format: str):
    """The loader function of a dataset format (a key of `LOADERS`)."""
    if format not in LOADERS:
        raise ValueError(f"unknown dataset format {format!r}; the formats are: {', '.join(LOADERS)}")
    module, name = LOADERS[format].split(":")
    return getattr(importlib.import_module(module, __name__), name)


def load_dataset_by_format(format: str, path, **options):
    """DatasetDict (train/validation/test as the source has them) of a dataset in the given format."""
    loader = get_loader(format)
    if format == "synthcxr" and options.pop("section", "findings") != "findings":
        raise ValueError("SynthCXR reports are findings only; use section='findings'")
    try:
        inspect.signature(loader).bind(path, **options)
    except TypeError as e:
        raise ValueError(f"dataset format {format!r} ({loader.__name__}): {e}") from None
    return loader(path, **options)
