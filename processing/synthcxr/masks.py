"""Compact, deterministic per-study mask files.

One `.npz` per study (readable with plain `np.load`):
  names            (K,)  str    anatomy class names, CXAS spelling, CXAS channel order
  anatomy          packed bits of a bool (K, H, W) array, packed along W (np.packbits, bitorder big)
  shape            (3,)  int    K, H, W
  finding_masks    packed bits of a bool (F, H, W) array: pixels of each finding, in manifest `findings` order
  finding_shape    (3,)  int    F, H, W
The zip members carry a fixed timestamp, so the same study always gives the same bytes.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def pack(names, anatomy: np.ndarray, findings: np.ndarray | None = None) -> bytes:
    """Serialise masks to .npz bytes (deflate level 1: masks are mostly zeros, so fast levels compress well)."""
    if anatomy.dtype != bool or anatomy.ndim != 3 or anatomy.shape[0] != len(names):
        raise ValueError(f"anatomy masks must be bool (K, H, W) with K = len(names); got {anatomy.dtype} "
                         f"{anatomy.shape} for {len(names)} names")
    h, w = anatomy.shape[1:]
    findings = np.zeros((0, h, w), bool) if findings is None else findings
    members = {"names": np.array(list(names)), "anatomy": np.packbits(anatomy, axis=-1),
               "shape": np.array(anatomy.shape, np.int64), "finding_masks": np.packbits(findings, axis=-1),
               "finding_shape": np.array(findings.shape, np.int64)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, arr in members.items():
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH), _npy_bytes(arr),
                        compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return buf.getvalue()


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file and os.replace, so a crash never leaves a truncated file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _unpack(z, key: str, shape_key: str) -> np.ndarray:
    k, h, w = (int(x) for x in z[shape_key])
    return np.unpackbits(z[key], axis=-1, count=w).astype(bool).reshape(k, h, w)


def load_mask_file(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(names, anatomy bool (K, H, W), finding masks bool (F, H, W)) from one study's .npz."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask file {path} does not exist; regenerate the dataset with `asarg synth`")
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(n) for n in z["names"])
        return names, _unpack(z, "anatomy", "shape"), _unpack(z, "finding_masks", "finding_shape")
