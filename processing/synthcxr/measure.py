"""Measurements on anatomy masks. The generator labels cardiomegaly and an enlarged cardiomediastinum with exactly
these functions applied to the masks it writes, so anyone can re-derive those labels from the stored masks."""

from __future__ import annotations

import numpy as np

CTR_THRESHOLD = 0.50  # cardiothoracic ratio above which the heart is enlarged (PA film convention)
MEDIASTINAL_THRESHOLD = 0.30  # mediastinal width at the aortic knob / thoracic width; normal films stay below 0.28


def _extent(cols_any: np.ndarray) -> int:
    idx = np.flatnonzero(cols_any)
    return int(idx[-1] - idx[0] + 1) if idx.size else 0


def thoracic_width(masks: dict[str, np.ndarray]) -> int:
    """Widest internal thoracic diameter in pixels: horizontal extent of both lung masks."""
    return _extent((masks["right lung"] | masks["left lung"]).any(axis=0))


def cardiothoracic_ratio(masks: dict[str, np.ndarray]) -> float:
    """Transverse cardiac diameter (horizontal extent of the heart mask) / thoracic width."""
    tw = thoracic_width(masks)
    if tw == 0:
        raise ValueError("no lung pixels in the masks: cannot measure the cardiothoracic ratio")
    return _extent(masks["heart"].any(axis=0)) / tw


def mediastinal_ratio(masks: dict[str, np.ndarray]) -> float:
    """Mediastinal width at the level of the aortic knob (rows of the 'aortic arch' mask) / thoracic width."""
    rows = np.flatnonzero(masks["aortic arch"].any(axis=1))
    tw = thoracic_width(masks)
    if rows.size == 0 or tw == 0:
        raise ValueError("no 'aortic arch' or lung pixels in the masks: cannot measure the mediastinal width")
    med = masks["upper mediastinum"][rows] | masks["aortic arch"][rows]
    return int(_row_extents(med).max()) / tw


def _row_extents(rows: np.ndarray) -> np.ndarray:
    """`_extent` of every row of a bool (R, W) array at once: last True - first True + 1, or 0 for an empty row."""
    first = rows.argmax(axis=1)
    last = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
    return np.where(rows.any(axis=1), last - first + 1, 0)


def as_dict(names, masks: np.ndarray) -> dict[str, np.ndarray]:
    return {n: masks[i] for i, n in enumerate(names)}
