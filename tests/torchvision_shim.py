"""Make PyPI's torchvision importable next to the CPU-only torch wheel (used only by the CXAS parity tests).

PyPI's torchvision 0.28 is a CUDA build: its `_C.so` cannot load without libtorch_cuda, so its C++ ops are never
registered, and `torchvision/_meta_registrations.py` then fails at import time with
`RuntimeError: operator torchvision::nms does not exist` because it registers fake kernels for `nms` and `qnms`
without checking that they exist. Declaring those two op schemas first lets torchvision import; its models
(`resnet50()`, which is all cxas and torchxrayvision's CXAS U-Net use) work, its C++ ops (nms, roi_align, ...) do
not. ASaRG itself never imports torchvision (the CXAS-compatible segmenter is pure torch); see
.ci/install_parity.sh.
"""

from __future__ import annotations

import torch

_LIBRARY = None  # keep the Library object alive: dropping it would unregister the schemas


def declare_torchvision_ops() -> None:
    """Declare `torchvision::nms` / `torchvision::qnms` unless something (the real `_C.so`, or an earlier call)
    already did. Call before the first `import torchvision`; calling it again is harmless."""
    global _LIBRARY
    if _LIBRARY is not None or _op_exists("nms"):
        return
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = library


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True
