"""Image input (processing/image_io.py): PNG/JPEG 8/16-bit, DICOM (modality LUT, VOI LUT, MONOCHROME1), clear errors,
and a real DICOM chest radiograph through processor -> model -> generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import prompt_for
from PIL import Image

from asarg.processing.image_io import load_image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _gradient(height: int = 48, width: int = 40, maximum: int = 4095, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, maximum, height * width).reshape(height, width)
    return np.clip(base + rng.normal(0, maximum / 50, base.shape), 0, maximum).astype(np.uint16)


def _write_dicom(
    path, pixels: np.ndarray | None, photometric: str = "MONOCHROME2", sop_class=CR_IMAGE_STORAGE, **tags
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---- PNG / JPEG ------------------------------------------------------------------------------------------------------


def test_png_8_and_16_bit_and_jpeg_load(tmp_path):
    eight = (_gradient(maximum=255)).astype(np.uint8)
    Image.fromarray(eight, mode="L").save(tmp_path / "a.png")
    Image.fromarray(_gradient(maximum=65535).astype(np.uint16)).save(tmp_path / "b.png")
    Image.fromarray(eight, mode="L").convert("RGB").save(tmp_path / "c.jpg", quality=95)

    png8 = load_image(tmp_path / "a.png")
    assert png8.mode == "L" and np.array_equal(np.asarray(png8), eight)
    png16 = load_image(tmp_path / "b.png")
    assert png16.mode.startswith("I") and np.asarray(png16).max() > 255  # 16-bit depth kept for the processor
    jpeg = load_image((tmp_path / "c.jpg").read_bytes())
    assert jpeg.size == (40, 48) and jpeg.mode == "RGB"


def test_truncated_png_is_a_clear_error(tmp_path):
    Image.fromarray(_gradient(maximum=255).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: the image is truncated or corrupt"):
        load_image(tmp_path / "cut.png")


def test_text_file_named_png_is_a_clear_error(tmp_path):
    (tmp_path / "report.png").write_text("FINDINGS: The lungs are clear.\n")
    with pytest.raises(ValueError, match="report.png: not an image file"):
        load_image(tmp_path / "report.png")
    (tmp_path / "report.dcm").write_text("FINDINGS: The lungs are clear.\n")
    with pytest.raises(ValueError, match="report.dcm: not a DICOM file"):
        load_image(tmp_path / "report.dcm")


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "absent.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(tmp_path / "empty.png")


# ---- DICOM -----------------------------------------------------------------------------------------------------------


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    path = _write_dicom(tmp_path / "sr.dcm", None, sop_class=BASIC_TEXT_SR)
    with pytest.raises(ValueError, match="sr.dcm: the DICOM object has no pixel data"):
        load_image(path)


def test_monochrome1_and_its_monochrome2_twin_give_the_same_pixels(tmp_path):
    pixels = _gradient()
    m2 = load_image(_write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2"))
    m1 = load_image(_write_dicom(tmp_path / "m1.dcm", 4095 - pixels, "MONOCHROME1"))
    assert m1.mode == m2.mode == "L"
    assert np.array_equal(np.asarray(m1), np.asarray(m2))
    # The ramp runs dark -> bright in MONOCHROME2, so after inversion MONOCHROME1 must too (bone bright).
    assert np.asarray(m1)[0].mean() < np.asarray(m1)[-1].mean()


def test_windowed_twins_agree_and_the_window_is_applied(tmp_path):
    pixels = _gradient()
    m2 = _write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2", WindowCenter=1500, WindowWidth=1001)
    # DICOM's linear window maps x to (x - (c - 0.5)) / (w - 1) + 0.5: its mirror image under x -> 4095 - x is the
    # window centred at 4096 - c (not 4095 - c).
    m1 = _write_dicom(tmp_path / "m1.dcm", 4095 - pixels, "MONOCHROME1", WindowCenter=4096 - 1500, WindowWidth=1001)
    a, b = np.asarray(load_image(m2)), np.asarray(load_image(m1))
    assert np.array_equal(a, b)
    saturated = pixels >= 1500 + 500
    assert saturated.any() and (a[saturated] == 255).all()  # the window clipped the bright part


def test_modality_lut_rescale_is_applied(tmp_path):
    pixels = _gradient()
    plain = load_image(_write_dicom(tmp_path / "a.dcm", pixels))
    # A negative slope flips intensities: the modality LUT must run before scaling.
    flipped = load_image(_write_dicom(tmp_path / "b.dcm", pixels, RescaleSlope=-2, RescaleIntercept=100))
    assert np.array_equal(np.asarray(flipped), 255 - np.asarray(plain))


def test_real_chest_radiograph_dicom_through_processor_model_generate(rg1_path, make_asarg):
    image = load_image(rg1_path)  # Philips CR, PA chest, MONOCHROME1, 15-bit, window 15000/30000
    assert image.mode == "L" and image.size == (1841, 1955)
    array = np.asarray(image)
    # MONOCHROME1 inverted: the lung fields (centre-left/right) are darker than the spine (centre column).
    h, w = array.shape
    lungs = np.concatenate([array[h // 3 : h // 2, w // 5 : w // 3], array[h // 3 : h // 2, 2 * w // 3 : 4 * w // 5]])
    spine = array[h // 3 : h // 2, w // 2 - 40 : w // 2 + 40]
    assert lungs.mean() < spine.mean()

    model, processor = make_asarg(live_seg=True)
    inputs = processor(images=[image], text=[prompt_for(processor)], return_tensors="pt")
    assert inputs["seg_pixel_values"].shape == (1, 3, 32, 32)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
    assert isinstance(processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])[0], str)
