"""Bytes per image of ASaRG's segmentation cache at the LLaVA-1.5 scale, versus full-resolution masks (COMG).

    python benchmarks/quality/seg_cache_size.py            # synthetic entry + one real entry (CXAS net, random weights, RG1)
    python benchmarks/quality/seg_cache_size.py --no-real  # synthetic entry only (no segmenter run)

LLaVA-1.5 scale: 336-pixel CLIP ViT-L/14 -> 24x24 patch grid; CXAS: 159 class maps and 128-channel features.
A cache entry stores the maps as uint8 coverage fractions and the features as fp16, already pooled to that grid.

Reference: COMG (Gu et al., WACV 2024) stores the CXAS masks at full resolution; its README gives ~147 GB for
IU X-ray. IU X-ray (Open-i) has 7,470 images (the image ids in torchxrayvision's NLMCXR_reports.tgz), i.e. about
19.7 MB per image. For a second, format-independent yardstick the script also prints the size of 159 full-resolution
512x512 masks, one byte per pixel and bit-packed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

from asarg.processing.seg_cache import encode_entry

GRID, CLASSES, CHANNELS = 24, 159, 128
COMG_IU_BYTES, IU_IMAGES = 147e9, 7470
LIMIT = 256 * 1024


def synthetic_entry_bytes() -> int:
    rng = np.random.default_rng(0)
    entry = {
        "seg_maps": rng.random((CLASSES, GRID, GRID)).astype(np.float32),
        "seg_features": rng.normal(0, 1, (CHANNELS, GRID, GRID)).astype(np.float32),
    }
    return len(encode_entry(entry, {"segmenter": "0" * 64, "image": "0" * 64}))


def real_entry_bytes() -> tuple[int, float]:
    """One real entry: CXAS-compatible segmenter (random weights) on the RG1 PA chest DICOM, tiny LLaVA at 336/14."""
    import torch
    from pydicom.data import get_testdata_file

    from asarg.processing.image_io import load_image
    from asarg.processing.seg_cache import SegCache
    from asarg.training.tiny import tiny_asarg_config, tiny_processor, tiny_tokenizer
    from modeling_asarg import AsargForConditionalGeneration, cxas_seg_config, llava_config_kwargs

    tokenizer = tiny_tokenizer()
    seg = cxas_seg_config()
    config = tiny_asarg_config(tokenizer, num_seg_classes=CLASSES, seg_feature_channels=CHANNELS)
    config_dict = llava_config_kwargs(config)
    config_dict["vision_config"].update(image_size=336, patch_size=14)
    config_dict.update(seg, image_seq_length=GRID * GRID)
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(type(config)(**config_dict)).eval()
    processor = tiny_processor(tokenizer, model.config, image_size=336)
    image = load_image(get_testdata_file("RG1_UNCR.dcm"))
    with tempfile.TemporaryDirectory() as directory:
        cache = SegCache(directory, model, processor)
        start = time.perf_counter()
        key = cache.ensure([image])[0]
        seconds = time.perf_counter() - start
        return cache.entry_bytes(key), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-real", action="store_true", help="skip the real segmenter run (about 10 s on CPU)")
    args = parser.parse_args(argv)

    comg_per_image = COMG_IU_BYTES / IU_IMAGES
    full_u8 = CLASSES * 512 * 512
    full_bits = full_u8 / 8
    sizes = {"synthetic entry": synthetic_entry_bytes()}
    if not args.no_real:
        sizes["real entry (CXAS net on RG1_UNCR.dcm)"], seconds = real_entry_bytes()
    print(f"ASaRG segmentation cache at the LLaVA-1.5 scale: {GRID}x{GRID} grid, {CLASSES} maps, {CHANNELS} channels")
    print(f"  payload: maps {CLASSES * GRID * GRID:,} B (uint8) + features {CHANNELS * GRID * GRID * 2:,} B (fp16)")
    for label, size in sizes.items():
        verdict = "OK" if size <= LIMIT else "OVER"
        print(f"  {label}: {size:,} bytes/image ({size / 1024:.1f} KiB; limit 256 KiB: {verdict})")
    if not args.no_real:
        print(f"  segmenter pass + pooling + write for that entry: {seconds:.1f} s on this machine")
    size = max(sizes.values())
    print("Full-resolution masks:")
    print(f"  COMG (README: ~147 GB for IU X-ray / {IU_IMAGES:,} images): {comg_per_image / 1e6:.1f} MB/image")
    print(f"  159 masks at 512x512, uint8: {full_u8 / 1e6:.1f} MB/image; bit-packed: {full_bits / 1e6:.2f} MB/image")
    print("Ratio (full-resolution / ASaRG cache):")
    print(f"  vs COMG: {comg_per_image / size:,.0f}x smaller")
    print(f"  vs 512x512 uint8 masks: {full_u8 / size:,.0f}x; vs bit-packed: {full_bits / size:,.0f}x")
    print(f"  IU X-ray ({IU_IMAGES:,} images): {size * IU_IMAGES / 1e9:.2f} GB vs COMG's ~147 GB")
    return 0 if size <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
