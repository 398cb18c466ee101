"""Diagnostic of R8 (issue 20, session 8): how much probability the report model puts, at its first report token,
on tokens that only start device sentences (in the training reports), on validation films with and without devices.
The prompt ends with "ASSISTANT:" and the first word carries its space, as in training (the processor's generation
prompt used to end with the space itself, a token training never saw there; fixed in session 8).

    python docs/results/report_recipe/first_token_mass.py [RUN]   # RUN: runs/r20/runs/R8 (default); runs/data/synth-606
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports
from asarg.processing.inference import load_for_generation, prompt_text
from asarg.processing.synthcxr.dataset import read_manifest

model, processor = load_for_generation(sys.argv[1] if len(sys.argv) > 1 else "runs/r20/runs/R8")
tok = processor.tokenizer
train = read_manifest(Path("runs/data/synth-606"), "train")[:4000]
DEV = re.compile(r"tube|line|catheter|pacemaker|wire|clip|PICC|port", re.I)
first_dev, first_all = Counter(), Counter()
for r in train:
    s0 = re.split(r"(?<=\.)\s+", r["findings_text"])[0]
    t = tok(" " + s0, add_special_tokens=False)["input_ids"][0]  # as in training: after "ASSISTANT:", with its space
    first_all[t] += 1
    if DEV.search(s0) and not s0.lower().startswith("no "):
        first_dev[t] += 1
dev_ids = [t for t, c in first_dev.items() if c >= 0.8 * first_all[t]]  # first tokens that start device sentences
val = read_manifest(Path("runs/data/synth-606"), "validation")[:400]
labels = label_reports([r["findings_text"] for r in val])
k = CHEXPERT_LABELS.index("Support Devices")
prefix = prompt_text(processor).removesuffix(" ")  # the prompt training saw: the space belongs to the first word
out = {"with": [], "without": []}
top = Counter()
for r, y in zip(val, labels[:, k]):
    image = Image.open(Path("runs/data/synth-606") / r["image"]).convert("L")
    inputs = processor(images=[image], text=[prefix], return_tensors="pt")
    with torch.no_grad():
        p = model(**inputs).logits[0, -1].float().softmax(-1)
    mass = float(p[dev_ids].sum())
    out["with" if y == 1 else "without"].append(mass)
    if y == 1:
        top[tok.convert_ids_to_tokens(int(p.argmax()))] += 1

print(
    json.dumps(
        {
            "device_first_tokens": tok.convert_ids_to_tokens(dev_ids),
            "mass_with_devices_median": float(np.median(out["with"])),
            "mass_without_median": float(np.median(out["without"])),
            "mass_with_devices_max": float(np.max(out["with"])),
            "n_with": len(out["with"]),
            "argmax_first_token_on_device_films": top.most_common(5),
        },
        indent=1,
    )
)
