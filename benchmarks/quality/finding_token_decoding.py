"""A checkpoint's validation CE under another decoding: the finding tokens' temperature (0 = verdict tokens) and the
classifier-free guidance scale (issue 20's decoding explorations; validation studies only, never a test split).

    python benchmarks/quality/finding_token_decoding.py --model runs/r20/runs/R8 --data runs/data/synth-606 \\
        [--temperature 0] [--guidance 2] [--out FILE]

Prints one JSON line (micro, macro, the focus labels' F1, share of distinct reports); `--out` also keeps the reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.processing.atomic import atomic_write
from asarg.processing.inference import generate_reports, load_for_generation
from asarg.processing.synthcxr.dataset import read_manifest

FOCUS = ("Support Devices", "Pleural Effusion", "Cardiomegaly", "Edema", "Lung Opacity", "Pneumothorax")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint folder with finding tokens")
    p.add_argument("--data", required=True, help="SynthCXR folder; its validation split is read")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--temperature", type=float, default=1.0, help="config.finding_token_temperature (0 = verdicts)")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance_scale (1 = off)")
    p.add_argument("--out", help="JSON file for the result and the reports")
    args = p.parse_args(argv)
    model, processor = load_for_generation(args.model)
    model.config.finding_token_temperature = args.temperature
    folder = Path(args.data)
    studies = read_manifest(folder, "validation")[: args.n]
    images = [Image.open(folder / r["image"]).convert("L") for r in studies]
    options = {"guidance_scale": args.guidance} if args.guidance != 1.0 else {}
    reports = generate_reports(model, processor, images, batch_size=16, **options)
    ce = compute_ce(reports, [r["findings_text"] for r in studies])
    out = {
        "model": args.model,
        "temperature": args.temperature,
        "guidance": args.guidance,
        "f1_micro": ce["f1_micro"],
        "f1_macro": ce["f1_macro"],
        "per_label": {k: ce["per_label"][k]["f1"] for k in FOCUS},
        "distinct": len(set(reports)) / len(reports),
    }
    print(json.dumps(out))
    if args.out:
        atomic_write(Path(args.out), json.dumps(out | {"reports": reports}, indent=1).encode())
    return out


if __name__ == "__main__":
    main()
