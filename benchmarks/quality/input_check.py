"""The input check (`asarg.processing.input_check`) on inputs that are not frontal chest films, and on held-out
SynthCXR films that are: issue 18's target is every non-chest input flagged and at most 1% of SynthCXR flagged.

    python benchmarks/quality/input_check.py [--model DIR] [--synthcxr runs/data/synth-7070] [--n 400]

Non-chest inputs are what the installed packages ship: pydicom-data's extremity film (RG3), CT, MR, ultrasound and
secondary-capture objects; matplotlib's sample photo (Grace Hopper) and images; blank black and white films; a
200×10000 strip. The real chest DICOM (RG1) is reported apart: a chest film the synthetic-only model should read
with a warning, not refuse. Writes docs/results/input_check.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from asarg.processing.image_io import dicom_header, load_image
from asarg.processing.inference import load_for_generation
from asarg.processing.input_check import check_input
from asarg.processing.models import resolve_model
from asarg.processing.synthcxr.dataset import SPLITS, read_manifest

SAMPLE = Path(matplotlib.get_data_path()) / "sample_data"
NON_CHEST_DICOM = ("RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm")
PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def non_chest() -> dict[str, tuple[Image.Image, dict]]:
    inputs = {
        name: (load_image(get_testdata_file(name)), dicom_header(get_testdata_file(name))) for name in NON_CHEST_DICOM
    }
    inputs |= {name: (load_image(SAMPLE / name), {}) for name in PHOTOS}
    inputs["black film"] = (Image.new("L", (512, 512), 0), {})
    inputs["white film"] = (Image.new("L", (512, 512), 255), {})
    inputs["200x10000 strip"] = (
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (10000, 200), np.uint8)),
        {},
    )
    return inputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="default: the embedded default model")
    p.add_argument("--synthcxr", default="runs/data/synth-7070", help="held-out SynthCXR films (all splits)")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--out", default="docs/results/input_check.json")
    args = p.parse_args(argv)
    model, processor = load_for_generation(resolve_model(args.model))
    verdicts = {name: check_input(model, processor, image, header) for name, (image, header) in non_chest().items()}
    rg1 = get_testdata_file("RG1_UNCR.dcm")
    real = check_input(model, processor, load_image(rg1), dicom_header(rg1))
    folder = Path(args.synthcxr)
    records = [r for split in SPLITS for r in read_manifest(folder, split)][: args.n]
    synth = [check_input(model, processor, Image.open(folder / r["image"]).convert("L")) for r in records]
    result = {
        "non_chest": verdicts,
        "non_chest_refused": sum(v["refuse"] for v in verdicts.values()) / len(verdicts),
        "real_chest_RG1": real,
        "synthcxr": {
            "folder": str(folder),
            "films": len(synth),
            "refused": sum(v["refuse"] for v in synth) / len(synth),
            "warned": sum(bool(v["warnings"]) for v in synth) / len(synth),
            "refusal_reasons": sorted({reason for v in synth for reason in v["reasons"]})[:10],
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    for name, verdict in verdicts.items():
        print(
            f"{name:32s} refuse={verdict['refuse']!s:5s} {'; '.join(verdict['reasons'] + verdict['warnings'])[:150]}"
        )
    print(f"RG1 (real chest)                 refuse={real['refuse']} {'; '.join(real['warnings'])[:150]}")
    s = result["synthcxr"]
    print(f"SynthCXR held out: {s['films']} films, refused {s['refused']:.1%}, warned {s['warned']:.1%}")


if __name__ == "__main__":
    main()
