"""The original CXAS segmenter, from `cxas` and from `torchxrayvision`, with random weights, for the parity tests.

Both are installed by `.ci/install_parity.sh` into `<venv>/parity-site`, a folder kept off sys.path because PyPI's
torchvision (a CUDA build) breaks `import transformers` in the venv once it is importable. Here, and only here, that
folder is put on sys.path after declaring the two torchvision ops its import needs (`tests/torchvision_shim.py`).

`cxas/__init__.py` imports the whole tool (SimpleITK, pydicom<3, gdown, ...), none of which the network needs, so the
three files of `cxas/models/UNet/` are imported as a package of their own (they only import torch and torchvision).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

INSTALL_HINT = "run `.ci/install_parity.sh .venv/bin/python` (CI's install step does)"


def parity_site() -> Path:
    return Path(os.environ.get("ASARG_PARITY_SITE", Path(sys.prefix) / "parity-site"))


def _require_references() -> None:
    from torchvision_shim import declare_torchvision_ops

    declare_torchvision_ops()
    site = str(parity_site())
    if Path(site).is_dir() and site not in sys.path:
        sys.path.append(site)  # appended: the venv's own packages (torch, numpy) keep priority
    missing = [name for name in ("torchvision", "cxas", "torchxrayvision") if importlib.util.find_spec(name) is None]
    if missing:
        message = f"CXAS parity references not installed ({', '.join(missing)} missing in {site}): {INSTALL_HINT}."
        if os.environ.get("ASARG_ALLOW_SKIP_PARITY") == "1":
            pytest.skip(message)
        pytest.fail(message)  # never a silent skip: CI must run the parity tests


def cxas_unet_module():
    """`cxas/models/UNet/backbone_unet.py`, imported without running `cxas/__init__.py`."""
    _require_references()
    if "_cxas_unet.backbone_unet" not in sys.modules:
        unet_dir = Path(importlib.util.find_spec("cxas").submodule_search_locations[0]) / "models" / "UNet"
        package = types.ModuleType("_cxas_unet")
        package.__path__ = [str(unet_dir)]
        sys.modules["_cxas_unet"] = package
    return importlib.import_module("_cxas_unet.backbone_unet")


def cxas_model():
    """cxas's `BackboneUNet("UNet_ResNet50_default", 159)`, random init, eval mode (what `cxas.CXAS` builds before it
    downloads the weights)."""
    return cxas_unet_module().BackboneUNet("UNet_ResNet50_default", 159).eval()


def xrv_model():
    """torchxrayvision's `chestx_anatomy.UNetResNet50(weights=False)`, random init, eval mode."""
    _require_references()
    from torchxrayvision.baseline_models import chestx_anatomy

    return chestx_anatomy.UNetResNet50(weights=False).eval()
