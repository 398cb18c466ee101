"""Segmentation cache: run the frozen segmenter once per image, keep only what the projector reads.

The projector sees the segmentation area-pooled to the vision patch grid (24x24 for LLaVA-1.5), so that is all the
cache stores: per image, K class maps as coverage fractions (uint8, value/255) and the C-channel feature map (fp16),
both already pooled — about 234 KiB at 24x24 with 159 maps and 128 channels, instead of the full-resolution masks
COMG keeps (~147 GB for IU X-ray). `quantize=False` stores float32 instead (lossless: training from the cache then
gives exactly the online loss).

Entries are keyed by the image content (sha256 of the decoded pixels, so the same image read from a PNG, a DICOM or
a numpy array hits the same entry) inside a folder named by the segmenter identity (sha256 of its weights, config,
class selection, activation, grid, input transform and storage format): changing any of them never reads stale
entries. The identity follows the weights: an in-place change (an optimizer step, `load_state_dict`) is seen through
torch's version counters at the next call and the weights are hashed again (`SegCache.refresh_identity`). The
segmenter must be frozen (no gradients) and always runs in eval mode here, so an entry depends on its image only,
never on the rest of its batch (BatchNorm). Each entry is one safetensors file written atomically (temporary file +
`os.replace`) with a checksum of its tensors in the header; a corrupt, partial or mismatched entry is detected on
read, discarded and recomputed.

Use it from `datasets`: `dataset = cache.add_to_dataset(dataset)` fills the cache (one batched segmenter pass per
`batch_size` images, with datasets' progress bar) and adds a `seg_cache_keys` column; the training collator
(`asarg.processing.seg_collator.AsargSegCacheCollator`) reads the entries by key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modeling_asarg.processing_asarg import pad_to_square, seg_pixel_array, to_rgb_image

from .atomic import atomic_write
from .image_io import load_image

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_COLUMN = "seg_cache_keys"
_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_MAX_HALF = float(np.finfo(np.float16).max)


class SegCache:
    """Pooled segmentation maps and features per image, on disk.

    Args:
        cache_dir: root folder; entries go to `cache_dir/<segmenter id>/<2 hex>/<image sha256>.safetensors`.
        model: an ASaRG model (`AsargForConditionalGeneration` or `AsargModel`) with a built-in segmenter; its config
            gives the class selection, map activation and vision patch grid.
        processor: the model's `AsargProcessor` (segmenter input size, normalisation, square padding).
        quantize: store maps as uint8 and features as fp16 (default); False stores float32 (lossless).
        batch_size: images per segmenter pass when several entries are missing.
    """

    def __init__(self, cache_dir, model, processor, quantize: bool = True, batch_size: int = 4):
        self.model = getattr(model, "model", model)
        if getattr(self.model, "segmenter", None) is None:
            raise ValueError(
                "SegCache needs a model with a built-in segmenter (config.segmenter_config); this one has none."
            )
        if not processor.seg_image_size:
            raise ValueError("The processor has no seg_image_size, so it cannot prepare segmenter input.")
        self.processor = processor
        self.quantize = quantize
        self.batch_size = batch_size
        vision = self.model.config.vision_config
        self.grid = (vision.image_size // vision.patch_size,) * 2
        self.root = _cache_root(cache_dir)
        _check_frozen(self.model.segmenter)
        self._fingerprint = None
        self.refresh_identity()

    # ---- identity and keys -------------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """sha256 of the segmenter's weights and settings, as they are now (see `refresh_identity`)."""
        self._follow_segmenter()
        return self._identity

    @property
    def directory(self) -> Path:
        """The folder of the current identity's entries, `cache_dir/<identity[:16]>`."""
        self._follow_segmenter()
        return self._directory

    def refresh_identity(self) -> str:
        """Hash the segmenter's weights and settings again; entries then go to (and come from) that identity's folder.

        Called on its own whenever a weight changes through torch (optimizer step, `load_state_dict`, an in-place op,
        `.to()`): every such change bumps the tensor's version counter or moves its storage, which is what `load`,
        `ensure` and `identity` compare, cheaply, before each use. Writes that bypass the counters (through `.data`
        or a numpy view of a weight) are invisible to it: call this method after them."""
        if self.model.segmenter is None:
            raise ValueError("The model's segmenter was removed: there are no weights to identify the cache by.")
        self._fingerprint = self._cheap_fingerprint()
        self._identity = self._segmenter_identity()
        self._directory = self.root / self._identity[:16]
        self._directory.mkdir(parents=True, exist_ok=True)
        self._write_description()
        return self._identity

    def _follow_segmenter(self) -> None:
        if self._cheap_fingerprint() != self._fingerprint:
            old = self._identity
            if self.refresh_identity() != old:
                logger.info(
                    "The segmenter changed: segmentation cache identity %s -> %s.", old[:16], self._identity[:16]
                )

    def _cheap_fingerprint(self) -> tuple:
        """What changes when the segmenter's weights or settings do, without reading the weights: each tensor's
        storage, version counter, dtype and shape, and the settings. Unchanged once the segmenter is gone (the `none`
        arm strips it after filling the cache): the entries stay readable under the last identity."""
        segmenter = self.model.segmenter
        if segmenter is None:
            return self._fingerprint
        tensors = [*segmenter.named_parameters(), *segmenter.named_buffers()]
        state = tuple((name, t.data_ptr(), _version(t), t.dtype, t.shape) for name, t in tensors)
        return json.dumps(self._settings(), sort_keys=True, default=str), state

    def _settings(self) -> dict:
        config = self.model.config
        return {
            "format": FORMAT_VERSION,
            "segmenter_config": config.segmenter_config.to_settings(),
            "activation": config.seg_map_activation,
            "class_indices": config.seg_class_indices,
            "class_groups": config.seg_class_groups,
            "group_reduction": config.seg_group_reduction,
            "grid": self.grid,
            "input": [self.processor.seg_image_size, self.processor.seg_image_mean, self.processor.seg_image_std],
            "pad_to_square": self.processor.pad_to_square,
            "quantize": self.quantize,
        }

    def _segmenter_identity(self) -> str:
        description = self._settings()
        digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.segmenter.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self._description = description
        return digest.hexdigest()

    def _write_description(self) -> None:
        path = self._directory / "segmenter.json"
        if not path.exists():
            info = {**self._description, "identity": self._identity}
            atomic_write(path, json.dumps(info, indent=2, default=str).encode())

    @staticmethod
    def as_image(image) -> Image.Image:
        """A dataset cell or file -> the RGB image the processor would see."""
        if isinstance(image, dict):  # a `datasets.Image` cell read without decoding
            image = image.get("bytes") or image.get("path")
        if isinstance(image, (str, os.PathLike, bytes, bytearray)):
            image = load_image(image)
        return to_rgb_image(image)

    def key_for(self, image) -> str:
        """sha256 of the decoded RGB pixels (and size): the image's content, however it was stored."""
        rgb = self.as_image(image)
        digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
        digest.update(rgb.tobytes())
        return digest.hexdigest()

    def path_for(self, key: str) -> Path:
        """The entry file of `key` for the segmenter as it is now."""
        self._follow_segmenter()
        return self._path(key)

    def _path(self, key: str) -> Path:
        # Keys come from datasets (`seg_cache_keys`) and an invalid entry is deleted, so anything but a key made by
        # `key_for` (64 lowercase hex digits) is refused: a path such as `../x/model` must never name a file outside.
        if not isinstance(key, str) or _KEY_PATTERN.fullmatch(key) is None:
            raise ValueError(
                f"{key!r} is not a segmentation cache key: keys are the 64 lowercase hex digits of SegCache.key_for "
                f"(the `{KEY_COLUMN}` column written by SegCache.add_to_dataset); rebuild that column with the cache."
            )
        return self._directory / key[:2] / f"{key}.safetensors"

    # ---- public API (each call first checks, cheaply, that the segmenter has not changed) -----------------------------

    def get_or_compute(self, image) -> dict[str, np.ndarray]:
        """`{"seg_maps": (K,g,g), "seg_features": (C,g,g)}` float32 for one image, from the cache or computed."""
        return self.get_or_compute_many([image])[0]

    def get_or_compute_many(self, images: list) -> list[dict[str, np.ndarray]]:
        rgbs = [self.as_image(image) for image in images]
        keys = self.ensure(rgbs)
        return [self._load_or_recompute(key, rgb) for key, rgb in zip(keys, rgbs)]

    def ensure(self, images: Iterable) -> list[str]:
        """Make sure every image has a valid entry (computing the missing ones in batches); return their keys."""
        self._follow_segmenter()
        rgbs = [self.as_image(image) for image in images]
        keys = [self.key_for(rgb) for rgb in rgbs]
        missing = {}
        for key, rgb in zip(keys, rgbs):
            if key not in missing and self._load(key) is None:
                missing[key] = rgb
        items = list(missing.items())
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            for (key, _), entry in zip(chunk, self._compute([rgb for _, rgb in chunk])):
                self._store(key, entry)
        return keys

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The verified entry as float32 arrays, or None when it is missing or invalid (an invalid file is removed)."""
        self._follow_segmenter()
        return self._load(key)

    def _load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self._decode(data, key)
        except ValueError as error:
            logger.warning("Segmentation cache entry %s is invalid (%s); it will be recomputed.", path, error)
            path.unlink(missing_ok=True)
            return None

    def add_to_dataset(self, dataset, image_column: str = "images", batch_size: int = 16, **map_kwargs):
        """`dataset.map` that fills the cache and adds `seg_cache_keys` (one key per image of each row)."""
        columns = getattr(dataset, "column_names", None)  # None for an IterableDataset that does not know them
        if columns is not None and image_column not in columns:
            raise ValueError(
                f"The dataset has no {image_column!r} column (it has {columns}); pass image_column= the column that "
                "holds the images."
            )
        fingerprint = hashlib.sha256(
            f"{getattr(dataset, '_fingerprint', '')}:{self.identity}:{image_column}".encode()
        ).hexdigest()
        return dataset.map(
            self.map_function(image_column),
            batched=True,
            batch_size=batch_size,
            desc=map_kwargs.pop("desc", "ASaRG segmentation cache"),
            # Hashing this function would pickle the segmenter's weights; the identity already names them.
            new_fingerprint=map_kwargs.pop("new_fingerprint", fingerprint[:32]),
            **map_kwargs,
        )

    def map_function(self, image_column: str = "images"):
        """A batched `datasets.map` function: {image_column: [...]} -> {"seg_cache_keys": [[key, ...], ...]}."""

        def fill(batch: dict) -> dict:
            rows = [cell if isinstance(cell, (list, tuple)) else [cell] for cell in batch[image_column]]
            flat = self.ensure([image for row in rows for image in row])
            keys, start = [], 0
            for row in rows:
                keys.append(flat[start : start + len(row)])
                start += len(row)
            return {KEY_COLUMN: keys}

        return fill

    # ---- computing ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _compute(self, rgbs: list[Image.Image]) -> list[dict[str, np.ndarray]]:
        segmenter = self.model.segmenter
        if segmenter is None:
            raise ValueError(
                "The model's segmenter was removed after this SegCache was built (e.g. the `none` arm), so a missing "
                "entry cannot be computed; fill the cache (SegCache.add_to_dataset) before removing the segmenter."
            )
        _check_frozen(segmenter)
        processor = self.processor
        squared = [pad_to_square(rgb) for rgb in rgbs] if processor.pad_to_square else rgbs
        # The processor's own segmenter transform, so cached and online inputs are the same pixels.
        side, mean, std = processor.seg_image_size, processor.seg_image_mean, processor.seg_image_std
        pixels = torch.from_numpy(np.stack([seg_pixel_array(image, side, mean, std) for image in squared]))
        with _eval_mode(segmenter):
            seg = self.model.run_segmenter(pixels)
        # The model's own pooling (`_pool_to_grid` is adaptive_avg_pool2d): pooled once here, identity in the model.
        maps = F.adaptive_avg_pool2d(seg["maps"].float(), self.grid).cpu().numpy()
        features = F.adaptive_avg_pool2d(seg["features"].float(), self.grid).cpu().numpy()
        return [{"seg_maps": m, "seg_features": f} for m, f in zip(maps, features)]

    def _load_or_recompute(self, key: str, rgb: Image.Image) -> dict[str, np.ndarray]:
        entry = self._load(key)
        if entry is None:  # removed or corrupted since `ensure` (e.g. another process): compute it again
            entry = self._compute([rgb])[0]
            self._store(key, entry)
            entry = self._decode(self._path(key).read_bytes(), key)
        return entry

    # ---- storage ---------------------------------------------------------------------------------------------------

    def _decode(self, data: bytes, key: str) -> dict[str, np.ndarray]:
        config = self.model.config
        shapes = {
            "seg_maps": (config.num_seg_classes, *self.grid),
            "seg_features": (config.seg_feature_channels, *self.grid),
        }
        return decode_entry(data, {"segmenter": self._identity, "image": key}, shapes)

    def _store(self, key: str, entry: dict[str, np.ndarray]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, encode_entry(entry, {"segmenter": self._identity, "image": key}, self.quantize))

    def entry_bytes(self, key: str) -> int:
        return self.path_for(key).stat().st_size


def _cache_root(cache_dir) -> Path:
    """`cache_dir` as a folder, created if missing; a clear error when the path is taken by something else."""
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"cache_dir {str(root)!r} exists and is not a folder; give a folder (it is created when missing)."
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def _check_frozen(segmenter: torch.nn.Module) -> None:
    """A cache holds one output per image: a segmenter that is being trained would make every entry stale."""
    if any(p.requires_grad for p in segmenter.parameters()):
        raise ValueError(
            "SegCache needs a frozen segmenter, but its weights require gradients (freeze_segmenter=False?): training "
            "would change its outputs and every cached entry would go stale. Freeze it (config.freeze_segmenter=True "
            "when the model is built, or model.model.segmenter.requires_grad_(False)), or run it online (no cache)."
        )


@contextmanager
def _eval_mode(segmenter: torch.nn.Module):
    """Run in eval mode, then give every submodule its own mode back. In train mode BatchNorm would normalise with
    the batch's statistics, so an entry would depend on which images it was computed with (and the running
    statistics would drift); eval mode is also how the frozen segmenter runs inside ASaRG (`AsargModel.train`)."""
    modes = [(module, module.training) for module in segmenter.modules()]
    segmenter.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _version(tensor: torch.Tensor) -> int:
    """The tensor's version counter (bumped by every in-place change); inference tensors have none."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def encode_entry(entry: dict[str, np.ndarray], labels: dict[str, str], quantize: bool = True) -> bytes:
    """One cache entry as safetensors bytes: maps (uint8 = round(255 x coverage), or float32) and features (fp16, or
    float32), with `labels` (segmenter identity, image key), the format version and a checksum in the header."""
    from safetensors.numpy import save

    maps, features = np.asarray(entry["seg_maps"]), np.asarray(entry["seg_features"])
    if quantize:
        if maps.min() < 0 or maps.max() > 1:
            raise ValueError("Segmentation maps must be coverage fractions in [0, 1] to be stored as uint8.")
        maps = np.round(maps * 255.0).astype(np.uint8)
        # fp16 unless a value would overflow it (very deep encoder levels): then that entry stays float32.
        features = features.astype(np.float16) if np.abs(features).max() < _MAX_HALF else features
    tensors = {
        "seg_maps": np.ascontiguousarray(maps, dtype=maps.dtype if quantize else np.float32),
        "seg_features": np.ascontiguousarray(features, dtype=features.dtype if quantize else np.float32),
    }
    metadata = {"format": str(FORMAT_VERSION), **labels, "checksum": _checksum(tensors)}
    return save(tensors, metadata=metadata)


def decode_entry(data: bytes, labels: dict[str, str], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Verify and read an entry written by `encode_entry`; ValueError says what is wrong with it."""
    from safetensors.numpy import load

    metadata = _header_metadata(data)
    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises its own SafetensorError on any malformed payload
        raise ValueError(f"unreadable payload ({error})") from error
    expected = {"format": str(FORMAT_VERSION), **labels}
    wrong = {k: metadata.get(k) for k, v in expected.items() if metadata.get(k) != v}
    if wrong:
        raise ValueError(f"header does not match this cache: {wrong}")
    if set(tensors) != set(shapes) or metadata.get("checksum") != _checksum(tensors):
        raise ValueError("checksum mismatch")
    bad_shapes = {k: tensors[k].shape for k, shape in shapes.items() if tensors[k].shape != tuple(shape)}
    if bad_shapes:
        raise ValueError(f"unexpected shapes {bad_shapes}, expected {shapes}")
    maps = tensors["seg_maps"]
    maps = maps.astype(np.float32) / 255.0 if maps.dtype == np.uint8 else maps.astype(np.float32)
    return {"seg_maps": maps, "seg_features": tensors["seg_features"].astype(np.float32)}


def _checksum(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _header_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file: 8-byte little-endian header length, then a JSON header."""
    if len(data) < 8:
        raise ValueError("file too short")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("truncated header")
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError as error:
        raise ValueError(f"corrupt header ({error})") from error
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("the header is not a safetensors header with __metadata__")
    return metadata


__all__ = ["FORMAT_VERSION", "KEY_COLUMN", "SegCache", "decode_entry", "encode_entry"]
