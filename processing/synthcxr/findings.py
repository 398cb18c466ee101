"""Which findings a study has (the plan), and the label algebra that turns findings into 14 CheXpert labels.

Labels come from the generator, never from parsing the text: each `Finding` records what the report asserts
about it (1 = stated, -1 = hedged), and every observation that is not asserted is either negated in the report
(0) or not mentioned (None, CheXpert's blank). Prevalences are roughly those of MIMIC-CXR-JPG (CheXpert labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asarg.evaluation.report_labeler.constants import CHEXPERT_LABELS

# The 14 observations in the order the generator draws them: the labeler's list (the one definition) with Lung
# Opacity before Lung Lesion. The order feeds the random draws (`choose_negations`), so changing it would change
# every SynthCXR dataset.
_LESION, _OPACITY = CHEXPERT_LABELS.index("Lung Lesion"), CHEXPERT_LABELS.index("Lung Opacity")
CHEXPERT = (
    *CHEXPERT_LABELS[:_LESION],
    CHEXPERT_LABELS[_OPACITY],
    CHEXPERT_LABELS[_LESION],
    *CHEXPERT_LABELS[_OPACITY + 1 :],
)

DEVICE_KINDS = ("ett", "ng_tube", "cvc", "picc", "pacemaker")


@dataclass
class Finding:
    kind: str  # effusion, pneumothorax, consolidation, opacity, atelectasis, edema, nodule, mass, ...
    observations: dict  # CheXpert name -> 1 (stated) or -1 (hedged)
    side: str | None = None  # right / left / bilateral / None
    severity: str | None = None
    location: list = field(default_factory=list)  # CXAS class names
    params: dict = field(default_factory=dict)  # numbers that define the finding (sizes, ratios, ...)
    mask: np.ndarray | None = None  # pixels of the finding (not an anatomy mask)
    text: dict = field(default_factory=dict)  # wording choices made at sampling time (hedge, comparison)

    def to_json(self) -> dict:
        bbox = None
        if self.mask is not None and self.mask.any():
            ys, xs = np.flatnonzero(self.mask.any(axis=1)), np.flatnonzero(self.mask.any(axis=0))
            bbox = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
        return {
            "kind": self.kind,
            "observations": dict(self.observations),
            "side": self.side,
            "severity": self.severity,
            "location": list(self.location),
            "bbox": bbox,
            "params": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.params.items()},
        }


@dataclass
class Plan:
    """Everything decided before the anatomy is drawn."""

    ctr: float
    widening: float
    kinds: list  # (kind, side) tuples, in sampling order
    dome_lift: dict  # side -> upward shift of the hemidiaphragm (atelectatic volume loss)


def _side(rng, p_right=0.4, p_left=0.3) -> str:
    u = rng.random()
    return "right" if u < p_right else "left" if u < p_right + p_left else "bilateral"


def sample_plan(rng: np.random.Generator) -> Plan:
    # cardiothoracic ratio: most normal, a heavy tail of enlarged hearts, many cases near 0.50
    ctr = rng.normal(0.55, 0.05) if rng.random() < 0.16 else rng.normal(0.445, 0.04)
    ctr = float(np.clip(ctr, 0.34, 0.72))
    card = ctr > 0.5
    widening = float(rng.uniform(0.1, 0.8)) if rng.random() < 0.08 else 0.0
    kinds: list[tuple[str, str | None]] = []
    edema = rng.random() < (0.30 if card else 0.10)
    effusion = rng.random() < (0.42 if (card or edema) else 0.17)
    if edema:
        kinds.append(("edema", "bilateral"))
    if effusion:
        kinds.append(("effusion", _side(rng, 0.35, 0.25)))
    if rng.random() < (0.45 if effusion else 0.13):
        kinds.append(("atelectasis", _side(rng, 0.3, 0.25)))
    if rng.random() < 0.06:
        kinds.append(("consolidation", _side(rng, 0.5, 0.4)))
    if rng.random() < 0.13:
        kinds.append(("opacity", _side(rng, 0.45, 0.35)))
    if rng.random() < 0.045:
        kinds.append(("pneumothorax", "right" if rng.random() < 0.55 else "left"))
    if rng.random() < 0.035:
        kinds.append(("mass" if rng.random() < 0.25 else "nodule", "right" if rng.random() < 0.5 else "left"))
    if rng.random() < 0.02:
        kinds.append(("pleural_thickening", _side(rng, 0.4, 0.4)))
    if rng.random() < 0.025:
        kinds.append(("rib_fracture", "right" if rng.random() < 0.5 else "left"))
    ett = rng.random() < 0.08
    for kind, p in (
        ("ett", 0.08),
        ("ng_tube", 0.6 if ett else 0.04),
        ("cvc", 0.12),
        ("picc", 0.06),
        ("pacemaker", 0.04),
    ):
        if ett if kind == "ett" else rng.random() < p:
            kinds.append((kind, None))
    lift = {"right": 0.0, "left": 0.0}
    for kind, side in kinds:
        if kind == "atelectasis" and rng.random() < 0.4:
            for s in ("right", "left") if side == "bilateral" else (side,):
                lift[s] = float(rng.uniform(0.01, 0.035))
    return Plan(ctr=ctr, widening=widening, kinds=kinds, dome_lift=lift)


# --------------------------------------------------------------------------- labels

# probability that the report explicitly negates an observation that is absent (-> label 0, else blank)
NEGATION_P = {
    "Pleural Effusion": 0.7,
    "Pneumothorax": 0.7,
    "Consolidation": 0.45,
    "Edema": 0.3,
    "Cardiomegaly": 0.55,
    "Enlarged Cardiomediastinum": 0.45,
    "Pneumonia": 0.1,
    "Lung Opacity": 0.08,
    "Atelectasis": 0.04,
    "Lung Lesion": 0.05,
    "Fracture": 0.12,
    "Pleural Other": 0.0,
    "Support Devices": 0.0,
}


def choose_negations(rng: np.random.Generator, findings: list[Finding]) -> list[str]:
    asserted = {o for f in findings for o in f.observations}
    return [o for o in CHEXPERT[1:] if o not in asserted and rng.random() < NEGATION_P[o]]


def labels_from(findings: list[Finding], negated: list[str]) -> dict:
    """CheXpert-style labels: 1 beats -1 beats 0 (negated) beats None (not mentioned)."""
    labels: dict[str, int | None] = {o: None for o in CHEXPERT}
    for o in negated:
        labels[o] = 0
    for f in findings:
        for o, v in f.observations.items():
            if labels[o] in (None, 0) or (labels[o] == -1 and v == 1):
                labels[o] = v
    pathology = [o for o in CHEXPERT[1:] if o != "Support Devices" and labels[o] in (1, -1)]
    labels["No Finding"] = None if pathology else 1
    return labels
