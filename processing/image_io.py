"""Read radiographs from PNG / JPEG (8- or 16-bit) and DICOM into PIL images the ASaRG processor accepts.

`load_image(path_or_bytes)` returns a fully decoded `PIL.Image`:
* PNG / JPEG / other PIL formats as stored (mode L, I;16, RGB, ...); `AsargProcessor` scales deep images per image.
* DICOM as CXAS reads it: modality LUT (rescale slope / intercept or LUT), then VOI LUT or window, then MONOCHROME1
  inverted (so bone is bright, whatever the photometric interpretation), min-max scaled to 8-bit grayscale (mode L).
  Colour DICOM (RGB / YBR) comes back as RGB.

Anything that is not a complete, decodable image raises `ValueError` naming the file and the problem: truncated or
corrupt files, text or other non-image files, DICOM objects without pixel data (structured reports, header-only
files), multi-frame DICOM and compressed DICOM whose decoder plugin is missing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from modeling_asarg.processing_asarg import min_max_to_uint8

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# A DICOM file without the Part 10 preamble starts with a little-endian tag of group 0x0002 or 0x0008.
_HEADERLESS_STARTS = (b"\x02\x00", b"\x08\x00")


def load_image(source: str | os.PathLike | bytes) -> Image.Image:
    """A decoded PIL image from a file path or the file's bytes; ValueError if it is not a readable image."""
    name, data = _read_bytes(source)
    if not data:
        raise ValueError(f"{name}: the file is empty, not an image.")
    if is_dicom(data, name):
        return _load_dicom(data, name)
    return _load_pil(data, name)


def dicom_header(source: str | os.PathLike | bytes) -> dict[str, str]:
    """The header fields that say what a DICOM film shows (Modality, BodyPartExamined, ViewPosition, and the
    ProjectionLabel some writers use instead); {} for a file that is not DICOM or a field that is absent."""
    name, data = _read_bytes(source)
    if not data or not is_dicom(data, name):
        return {}
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=data[128:132] != b"DICM")
    except Exception:  # an unreadable file is load_image's to name
        return {}
    fields = ("Modality", "BodyPartExamined", "ViewPosition", "PatientOrientation")
    return {field: str(dataset.get(field)).strip() for field in fields if dataset.get(field) not in (None, "")}


def is_dicom(data: bytes, name: str = "") -> bool:
    """DICOM Part 10 files carry "DICM" after a 128-byte preamble; old headerless files are known by their suffix."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in DICOM_SUFFIXES


def _read_bytes(source) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    return str(path), path.read_bytes()


# ---- PNG / JPEG / other PIL formats ----------------------------------------------------------------------------------


def _load_pil(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now: PIL is lazy, and a truncated file only fails when its pixels are read
    except UnidentifiedImageError as error:
        raise ValueError(
            f"{name}: not an image file (PIL cannot identify it). Give a PNG, JPEG or DICOM radiograph."
        ) from error
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{name}: the image is too large to decode safely ({error}); PIL refuses images this size as a possible "
            "decompression bomb. A radiograph needs far fewer pixels: downscale it (e.g. to 2048 px on its long side)."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{name}: the image is truncated or corrupt and cannot be decoded ({error}).") from error
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: the image is empty ({image.width}x{image.height}).")
    if image.mode in {"P", "PA"}:  # palette images: resolve the palette once, here
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    elif image.mode == "LA":
        image = image.convert("L")
    return image


# ---- DICOM -----------------------------------------------------------------------------------------------------------


def _load_dicom(data: bytes, name: str) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_marker = data[128:132] == b"DICM"
    if not has_marker and data[:2] not in _HEADERLESS_STARTS:
        raise ValueError(f"{name}: not a DICOM file (no 'DICM' marker and no DICOM header) despite its name.")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=not has_marker)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{name}: not a readable DICOM file ({type(error).__name__}: {error}).") from error
    if not has_marker and not any(tag in dataset for tag in ("SOPClassUID", "Modality", *_PIXEL_DATA_TAGS)):
        raise ValueError(
            f"{name}: not a DICOM file: it has no 'DICM' marker and its bytes do not parse as DICOM data elements, "
            "despite its name."
        )
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS):
        raise ValueError(
            f"{name}: the DICOM object has no pixel data (SOP class {dataset.get('SOPClassUID', 'unknown')}: a "
            "report, presentation state or header-only file?). Give the image object of the study."
        )
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(
            f"{name}: multi-frame DICOM ({dataset.NumberOfFrames} frames); ASaRG reads single radiographs. "
            "Extract the frame you want first."
        )
    pixels = _decode_pixels(dataset, name)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in {"MONOCHROME1", "MONOCHROME2"}:
        return Image.fromarray(_grayscale_to_uint8(dataset, pixels, photometric == "MONOCHROME1", name), mode="L")
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # pydicom converts YBR to RGB by default
        return Image.fromarray(_scale(pixels.astype(np.float64), name), mode="RGB")
    raise ValueError(f"{name}: unsupported DICOM photometric interpretation {photometric!r}.")


def _decode_pixels(dataset, name: str) -> np.ndarray:
    try:
        return dataset.pixel_array
    except Exception as error:  # pydicom raises RuntimeError / NotImplementedError / ValueError by decoder
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        hint = ""
        if syntax is not None and getattr(syntax, "is_compressed", False):
            hint = (
                f" The transfer syntax {syntax.name} is compressed: install a decoder plugin, e.g. "
                "`pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg`."
            )
        raise ValueError(
            f"{name}: the DICOM pixel data cannot be decoded ({type(error).__name__}: {error}).{hint}"
        ) from error


def _grayscale_to_uint8(dataset, pixels: np.ndarray, monochrome1: bool, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, dataset)  # stored values -> modality units (e.g. rescale slope/intercept)
    values = apply_voi_lut(values, dataset, index=0)  # the first window / VOI LUT the file recommends, if any
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D grayscale image, got pixel data of shape {values.shape}.")
    if monochrome1:  # low values are white in MONOCHROME1: flip so that every radiograph has bright bone
        values = values.max() + values.min() - values
    return _scale(values, name)


def _scale(values: np.ndarray, name: str) -> np.ndarray:
    """Min-max to 0..255 (as CXAS scales DICOM to [0, 1]); a constant image becomes black."""
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: the pixel data contains NaN or infinite values.")
    return min_max_to_uint8(values)


__all__ = ["DICOM_SUFFIXES", "is_dicom", "load_image"]
