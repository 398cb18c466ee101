"""`ground_report` -> DICOM: the grounded report of a film as a SEG of the structures it was traced to and a
Comprehensive SR of its sentences (`asarg.processing.dicom_out` writes them; `asarg generate --dicom-out` calls this).

    from asarg.evaluation.dicom_report import write_grounded_dicom
    paths = write_grounded_dicom(model, processor, "film.dcm", "out/")   # {"seg": ..., "sr": ..., "grounded": {...}}

The segmenter runs once: the same segmentation feeds generation, tracing and the SEG's masks (each structure's maps
at the film's size above `BOX_THRESHOLD`, a group the union of its members, so a SEG segment is the region whose
box `ground_report` gives).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asarg.processing import dicom_out
from asarg.processing.image_io import is_dicom, load_image

from .grounded_report import BOX_THRESHOLD, ground_report, segment, segmentation_masks
from .tracing import resolve_structures, structure_groups


def traced_structures(grounded: dict) -> list[str]:
    """The structures the report was traced to (each sentence's shown structures), in order of first appearance."""
    seen: dict[str, None] = {}
    for sentence in grounded.get("sentences", []):
        for structure in sentence["structures"]:
            seen.setdefault(structure["name"], None)
    return list(seen)


def structure_masks(model, segmentation, structures: Sequence[str]) -> np.ndarray:
    """(S, H, W) booleans at the film's size: each structure's maps above BOX_THRESHOLD, a group the union of its
    members (the anatomy groups `ground_report` traces by default, else each map alone). Computed a structure at a
    time, so only the traced structures' maps are ever brought to full resolution."""
    named = structure_groups(model.config) or resolve_structures(model.config)
    width, height = segmentation.size
    out = np.zeros((len(structures), height, width), dtype=bool)
    for i, name in enumerate(structures):
        channels = named[name]
        for first in range(0, len(channels), 4):  # a few full-resolution maps at a time
            chunk = channels[first : first + 4]
            if segmentation.masks is not None:
                maps = segmentation.masks[chunk]
            else:
                maps = segmentation_masks(segmentation._replace(maps=segmentation.maps[:, chunk]))
            out[i] |= (maps > BOX_THRESHOLD).any(0)
    return out


def write_grounded_dicom(
    model,
    processor,
    path: str | Path,
    out: str | Path,
    *,
    stem: str | None = None,
    image=None,
    report: str | None = None,
    top: int = 5,
    prompt: str | None = None,
    max_new_tokens: int = 160,
) -> dict:
    """Generate, ground and write the film at `path` as `<stem>.seg.dcm` + `<stem>.sr.dcm` in the folder `out`
    (and `<stem>.image.dcm`, the Secondary Capture the SEG refers to, for a PNG / JPEG film). `report`: ground this
    report instead of generating one. Returns the paths ("seg", "sr"[, "image"]), the grounded dict and the traced
    structures (segment i + 1 = structures[i])."""
    path, out = Path(path), Path(out)
    data = path.read_bytes()
    image = load_image(path) if image is None else image
    synthetic = not is_dicom(data, path.name)
    source = dicom_out.read_source(path) if not synthetic else dicom_out.synthetic_source(image, path.name, data)
    if (int(source.Rows), int(source.Columns)) != (image.height, image.width):
        raise ValueError(f"{path}: the DICOM's Rows x Columns differ from its decoded pixels.")
    segmentation = segment(model, processor, image)
    grounded = ground_report(
        model,
        processor,
        image,
        report,
        top=top,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        segmentation=segmentation,
    )
    structures = traced_structures(grounded)
    masks = structure_masks(model, segmentation, structures)
    stem = stem or f"{path.stem}-{hashlib.sha256(data).hexdigest()[:8]}"
    paths = dicom_out.write_pair(source, grounded, structures, masks, out, stem, synthetic=synthetic)
    return {**paths, "grounded": grounded, "structures": structures}


__all__ = ["structure_masks", "traced_structures", "write_grounded_dicom"]
