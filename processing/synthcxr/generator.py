"""SynthCXR study generator: seed + index -> image, CXAS-named anatomy masks, findings, labels and report.

Deterministic: every random draw comes from one numpy Generator seeded with SeedSequence([seed, index]), so a
study does not depend on how many others were generated or in what order (train sets of different sizes nest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as ana
from . import draw_findings as draw
from .findings import CHEXPERT, Finding, choose_negations, labels_from, sample_plan
from .measure import CTR_THRESHOLD, MEDIASTINAL_THRESHOLD, cardiothoracic_ratio, mediastinal_ratio
from .raster import Pose
from .report import ReportWriter
from .scene import Scene

VERSION = "synthcxr-v1"


ANATOMY_CLASSES = ana.ANATOMY_CLASSES


@dataclass
class Study:
    id: str
    seed: int
    index: int
    image: np.ndarray  # uint8 (H, W)
    mask_names: tuple
    masks: np.ndarray  # bool (K, H, W), K = len(ANATOMY_CLASSES), CXAS order
    findings: list
    labels: dict
    report: str
    measurements: dict
    distractors: list
    version: str = VERSION


def study_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:06d}"


def _pose(rng, size: int) -> Pose:
    return Pose(
        size,
        scale=rng.uniform(0.9, 1.06),
        aspect=rng.uniform(0.93, 1.07),
        angle_deg=rng.normal(0, 2.5),
        shift=np.clip(rng.normal(0, 0.02, 2), -0.05, 0.05),
    )


def _exposure(rng) -> dict:
    return {
        "blur_passes": int(rng.integers(1, 4)),
        "gain": rng.uniform(1.1, 1.55),
        "contrast": rng.uniform(1.0, 1.15),
        "bias": rng.uniform(-0.06, 0.02),
        "gamma": rng.uniform(0.8, 1.3),
        "noise": rng.uniform(0.004, 0.025),
    }


def _draw_planned(sc: Scene, rng, plan) -> list[Finding]:
    out: list[Finding] = []
    for kind, side in plan.kinds:
        if kind == "effusion":
            out += draw.effusion(sc, rng, side)
        elif kind == "pneumothorax":
            out += draw.pneumothorax(sc, rng, side)
        elif kind in ("consolidation", "opacity"):
            out += draw.airspace(sc, rng, kind, side)
        elif kind == "atelectasis":
            lifted = any(plan.dome_lift[s] > 0 for s in draw.SIDE_LIST[side])
            out += draw.atelectasis(sc, rng, side, lifted)
        elif kind == "edema":
            out += draw.edema(sc, rng)
        elif kind in ("nodule", "mass"):
            out += draw.nodule(sc, rng, kind, side)
        elif kind == "pleural_thickening":
            out += draw.pleural_thickening(sc, rng, side)
        elif kind == "rib_fracture":
            out += draw.rib_fracture(sc, rng, side)
        else:
            out += draw.device(sc, rng, kind)
    return out


def _measured_findings(sc: Scene, rng) -> tuple[list[Finding], dict]:
    """Cardiomegaly and an enlarged cardiomediastinum are labelled from the masks, by the functions in measure.py."""
    ctr, med = cardiothoracic_ratio(sc.masks), mediastinal_ratio(sc.masks)
    out = []
    if ctr > CTR_THRESHOLD:
        hedged = ctr <= CTR_THRESHOLD + 0.02 and rng.random() < 0.4
        sev = "mild" if ctr < 0.56 else "moderate" if ctr < 0.62 else "severe"
        out.append(
            Finding(
                "cardiomegaly",
                {"Cardiomegaly": -1 if hedged else 1},
                None,
                sev,
                ["heart"],
                {"ctr": ctr},
                sc.masks["heart"],
                {"hedged": hedged},
            )
        )
    if med > MEDIASTINAL_THRESHOLD:
        hedged = med <= MEDIASTINAL_THRESHOLD + 0.01 and rng.random() < 0.5
        out.append(
            Finding(
                "mediastinum",
                {"Enlarged Cardiomediastinum": -1 if hedged else 1},
                None,
                None,
                ["upper mediastinum", "aortic arch"],
                {"mediastinal_ratio": med},
                sc.masks["upper mediastinum"],
                {"hedged": hedged},
            )
        )
    return out, {"ctr": round(ctr, 4), "mediastinal_ratio": round(med, 4)}


def generate_study(seed: int, index: int, size: int = 256) -> Study:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    plan = sample_plan(rng)
    a = ana.sample_anatomy(rng, ctr=plan.ctr, mediastinal_widening=plan.widening)
    for side, lift in plan.dome_lift.items():  # atelectatic volume loss raises the hemidiaphragm
        a.dome[side] -= lift
        a.cp[side] -= 0.8 * lift
    sc = Scene(rng, a, _pose(rng, size))
    sc.build_masks()
    sc.paint_anatomy()
    findings = _draw_planned(sc, rng, plan)
    measured, measurements = _measured_findings(sc, rng)
    findings = measured + findings
    distractors = draw.distractors(sc, rng)
    image = sc.compose(_exposure(rng))
    negated = choose_negations(rng, findings)
    labels = labels_from(findings, negated)
    report = ReportWriter(rng).write(findings, negated)
    masks = sc.stack
    return Study(
        study_id(seed, index),
        int(seed),
        int(index),
        image,
        ANATOMY_CLASSES,
        masks,
        findings,
        labels,
        report,
        measurements,
        distractors,
    )


__all__ = ["CHEXPERT", "VERSION", "ANATOMY_CLASSES", "Study", "generate_study"]
