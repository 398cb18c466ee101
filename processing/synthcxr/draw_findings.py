"""Draw findings into a Scene and return them as `Finding`s with their own masks and CXAS-named locations.

Anatomy masks are never changed by a finding here (documented in README.md, "Mask semantics"): the lung masks are
the anatomical lung fields a segmenter trained on normal anatomy would draw, so a pneumothorax or an effusion does
not carve them. Label-relevant anatomy changes are only the heart and mediastinum sizes (cardiomegaly, enlarged
cardiomediastinum) and an elevated hemidiaphragm from atelectatic volume loss, decided before the anatomy is drawn.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as ana
from .findings import Finding
from .raster import binomial_blur, ellipse_pts, soft_blur, to_array
from .scene import Scene

SIDE_LIST = {"right": ("right",), "left": ("left",), "bilateral": ("right", "left")}
LUNG_DENSITY = 0.55  # density that fills an aerated hemithorax back up to soft tissue


def _pick_point(rng, mask: np.ndarray) -> tuple[int, int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    i = int(rng.integers(ys.size))
    return int(xs[i]), int(ys[i])


def _canon(sc: Scene, xy) -> np.ndarray:
    return sc.pose.inverse(np.asarray(xy, dtype=np.float64)[None])[0]


def _hedge(rng, p: float) -> bool:
    return bool(rng.random() < p)


# --------------------------------------------------------------------------- pleura


def effusion(sc: Scene, rng, side: str) -> list[Finding]:
    out = []
    for s in SIDE_LIST[side]:
        L, cp = sc.a.half_width[s], sc.a.cp[s]
        h = float(
            rng.choice(
                [rng.uniform(0.008, 0.04), rng.uniform(0.04, 0.13), rng.uniform(0.13, 0.3)], p=[0.5, 0.35, 0.15]
            )
        )
        x = np.linspace(1.2, 0.0, 16)
        top = cp - h + (0.03 + 0.5 * h) * (1 - np.clip(x, 0, 1)) ** 1.5  # meniscus: higher along the wall
        sgn = ana.SIDES[s]
        poly = np.concatenate(
            [np.stack([sc.a.mid + sgn * x * L, top], 1), [[sc.a.mid, 1.1], [sc.a.mid + sgn * 1.2 * L, 1.1]]]
        )
        region = sc.r.mask(poly) & sc.hemithorax[s]
        fluid = soft_blur(region, 2.5 * sc.scale)
        rows = np.linspace(0, 1, sc.size, dtype=np.float32)[:, None]
        sc.density += fluid * (LUNG_DENSITY + 0.08 * rows)
        sc.gate *= 1.0 - fluid
        out.append((s, h, region))
    sev = max(h for _, h, _ in out)
    severity = "small" if sev < 0.04 else "moderate" if sev < 0.13 else "large"
    hedged = sev < 0.02 and _hedge(rng, 0.6)
    mask = np.any([m for _, _, m in out], axis=0)
    loc = [f"{s} lung base" for s, _, _ in out] + [f"{s} hemidiaphragm" for s, _, _ in out]
    if sev >= 0.13:
        loc += [f"{s} mid zone lung" for s, _, _ in out]
    return [
        Finding(
            "effusion",
            {"Pleural Effusion": -1 if hedged else 1},
            side,
            severity,
            loc,
            {"height": sev},
            mask,
            {"hedged": hedged},
        )
    ]


def pneumothorax(sc: Scene, rng, side: str) -> list[Finding]:
    a, s = sc.a, ana.SIDES[side]
    f = float(
        rng.choice([rng.uniform(0.92, 0.975), rng.uniform(0.84, 0.92), rng.uniform(0.7, 0.84)], p=[0.5, 0.35, 0.15])
    )
    anchor = np.array([a.mid + s * a.mediastinum_half, a.dome[side]])
    hemi = sc.hemi_pts[side]
    collapsed = anchor + (hemi - anchor) * f
    inner = sc.r.mask(collapsed)
    gap = sc.hemithorax[side] & ~inner & sc.masks[f"{side} lung"]
    sc.gate *= ~gap
    sc.density -= 0.05 * gap
    sc.density += 0.03 * (inner & sc.masks[f"{side} lung"])  # the collapsed lung is a little denser
    line_img, draw = sc.r.canvas()
    sc.r.polygon(draw, collapsed, fill=None, outline=255, width=1)
    pleura = (to_array(line_img) > 0) & sc.masks[f"{side} lung"] & binomial_blur(gap, 1).astype(bool)
    sc.density += rng.uniform(0.05, 0.12) * pleura
    severity = "small" if f > 0.92 else "moderate" if f > 0.84 else "large"
    hedged = f > 0.955 and _hedge(rng, 0.4)
    loc = [f"{side} apical zone lung", f"{side} upper zone lung"] + ([f"{side} mid zone lung"] if f < 0.9 else [])
    return [
        Finding(
            "pneumothorax",
            {"Pneumothorax": -1 if hedged else 1},
            side,
            severity,
            loc,
            {"collapse_factor": f},
            gap,
            {"hedged": hedged},
        )
    ]


def pleural_thickening(sc: Scene, rng, side: str) -> list[Finding]:
    masks, loc = [], []
    for s in SIDE_LIST[side]:
        a, sg = sc.a, ana.SIDES[s]
        t = rng.uniform(0.01, 0.025)
        apical = rng.random() < 0.5
        anchor = np.array([a.mid, a.cp[s]]) if apical else np.array([a.mid, a.widest])
        hemi = sc.hemi_pts[s]
        shrunk = anchor + (hemi - anchor) * (1 - t / (a.half_width[s] if not apical else (a.cp[s] - a.apex)))
        band = sc.hemithorax[s] & ~sc.r.mask(shrunk) & sc.masks[f"{s} lung"]
        zone = (
            sc.zone(s, "apical zone lung") | sc.zone(s, "upper zone lung")
            if apical
            else sc.zone(s, "mid zone lung") | sc.zone(s, "upper zone lung")
        )
        band &= zone
        sc.density += 0.4 * binomial_blur(band, 2)
        masks.append(band)
        loc += (
            [f"{s} apical zone lung", f"{s} upper zone lung"]
            if apical
            else [f"{s} upper zone lung", f"{s} mid zone lung"]
        )
        del sg
    return [
        Finding(
            "pleural_thickening",
            {"Pleural Other": 1},
            side,
            None,
            loc,
            {},
            np.any(masks, axis=0),
            {"apical": bool(apical)},
        )
    ]


# --------------------------------------------------------------------------- parenchyma


def _blob(sc: Scene, rng, side: str, zone: str, radius: float, lobes: int) -> np.ndarray | None:
    pt = _pick_point(rng, sc.zone(side, zone))
    if pt is None:
        return None
    c = _canon(sc, pt)
    img, draw = sc.r.canvas()
    for _ in range(lobes):
        off = rng.normal(0, radius * 0.6, 2)
        sc.r.polygon(
            draw,
            ellipse_pts(
                c[0] + off[0],
                c[1] + off[1],
                radius * rng.uniform(0.6, 1.2),
                radius * rng.uniform(0.5, 1.0),
                16,
                rng.uniform(0, np.pi),
            ),
        )
    return soft_blur(img, radius * sc.pose.px_per_unit * 0.5) * sc.masks[f"{side} lung"]


def _zone_for(rng) -> str:
    return str(rng.choice(["lung base", "mid zone lung", "upper zone lung"], p=[0.55, 0.3, 0.15]))


def airspace(sc: Scene, rng, kind: str, side: str) -> list[Finding]:
    """Consolidation (dense, air bronchograms) or a non-specific opacity; one blob per involved lung."""
    masks, loc, zones = [], [], []
    for s in SIDE_LIST[side]:
        zone = _zone_for(rng)
        dens = sc.rng.uniform(0.25, 0.5) if kind == "consolidation" else sc.rng.uniform(0.1, 0.3)
        blob = _blob(sc, rng, s, zone, rng.uniform(0.035, 0.08), int(rng.integers(2, 6)))
        if blob is None:
            continue
        sc.density += dens * blob
        sc.gate *= 1.0 - 0.7 * blob
        masks.append(blob > 0.5)
        loc += [f"{s} {zone}", f"{s} lung"]
        zones.append(zone)
    if not masks:
        return []
    mask = np.any(masks, axis=0)
    if kind == "consolidation":
        pn = rng.choice(["none", "hedged", "stated"], p=[0.35, 0.4, 0.25])
        obs = {"Consolidation": 1} | (
            {"Pneumonia": -1} if pn == "hedged" else {"Pneumonia": 1} if pn == "stated" else {}
        )
        return [Finding("consolidation", obs, side, None, loc, {}, mask, {"pneumonia": str(pn), "zones": zones})]
    dd = rng.choice(["none", "atelectasis", "pneumonia", "both", "infection"], p=[0.35, 0.2, 0.15, 0.2, 0.1])
    obs = {"Lung Opacity": 1}
    if dd in ("atelectasis", "both"):
        obs["Atelectasis"] = -1
    if dd in ("pneumonia", "both", "infection"):
        obs["Pneumonia"] = -1
    return [Finding("opacity", obs, side, None, loc, {}, mask, {"ddx": str(dd), "zones": zones})]


def atelectasis(sc: Scene, rng, side: str, lifted: bool) -> list[Finding]:
    masks, loc = [], []
    plate = rng.random() < 0.5
    for s in SIDE_LIST[side]:
        base = sc.zone(s, "lung base")
        pt = _pick_point(rng, base & ~binomial_blur(~base, 3).astype(bool) if plate else base)
        if pt is None:
            continue
        c = _canon(sc, pt)
        img, draw = sc.r.canvas()
        if plate:
            length, tilt = rng.uniform(0.06, 0.14), rng.uniform(-0.25, 0.25)
            dx, dy = np.cos(tilt) * length / 2, np.sin(tilt) * length / 2
            sc.r.line(draw, np.array([[c[0] - dx, c[1] - dy], [c[0] + dx, c[1] + dy]]), rng.uniform(0.006, 0.014))
            layer = binomial_blur(to_array(img), 1) / 255.0
        else:
            sc.r.polygon(draw, ellipse_pts(c[0], c[1], rng.uniform(0.05, 0.1), rng.uniform(0.02, 0.035), 16))
            layer = soft_blur(img, 3 * sc.scale)
        layer *= sc.masks[f"{s} lung"]
        sc.density += rng.uniform(0.15, 0.35) * layer
        masks.append(layer > 0.4)
        loc += [f"{s} lung base"] + ([f"{s} hemidiaphragm"] if lifted else [])
    if not masks:
        return []
    wording = rng.choice(["stated", "likely", "opacity_likely"], p=[0.55, 0.2, 0.25])
    obs = {"Atelectasis": 1 if wording == "stated" else -1}
    if wording == "opacity_likely":
        obs["Lung Opacity"] = 1
    return [
        Finding(
            "atelectasis",
            obs,
            side,
            "plate-like" if plate else "basilar",
            loc,
            {"volume_loss": lifted},
            np.any(masks, axis=0),
            {"wording": str(wording)},
        )
    ]


def edema(sc: Scene, rng) -> list[Finding]:
    level = float(rng.uniform(0.0, 1.0))
    severity = "mild" if level < 0.45 else "moderate" if level < 0.8 else "severe"
    lungs = sc.lungs()
    haze = np.zeros_like(sc.density)
    for s in ana.SIDES:
        hu, hv = ana.hilum(sc.a, s)
        img, draw = sc.r.canvas()
        sc.r.polygon(draw, ellipse_pts(hu + ana.SIDES[s] * 0.03, hv + 0.04, 0.11 + 0.06 * level, 0.13 + 0.05 * level))
        haze += soft_blur(img, 10 * sc.scale)
    haze *= lungs
    sc.density += (0.06 + 0.22 * level) * haze
    sc.texture *= 1.0 + 0.6 * level  # vascular engorgement / indistinct markings
    if level > 0.45:  # Kerley B lines at the lateral lung bases
        img, draw = sc.r.canvas()
        for s, sg in ana.SIDES.items():
            L, cp = sc.a.half_width[s], sc.a.cp[s]
            for v in cp - 0.03 - np.arange(int(rng.integers(3, 7))) * 0.012:
                u0 = sc.a.mid + sg * L * 0.97
                sc.r.line(draw, np.array([[u0, v], [u0 - sg * rng.uniform(0.02, 0.035), v]]), 0.003)
        sc.density += 0.12 * binomial_blur(to_array(img), 1) / 255.0 * lungs
    wording = rng.choice(["stated", "congestion", "hedged"], p=[0.6, 0.2, 0.2]) if level < 0.45 else "stated"
    obs = {"Edema": -1 if wording == "hedged" else 1}
    return [
        Finding(
            "edema",
            obs,
            "bilateral",
            severity,
            ["right lung", "left lung"],
            {"level": level},
            haze > 0.5,
            {"wording": str(wording)},
        )
    ]


def nodule(sc: Scene, rng, kind: str, side: str) -> list[Finding]:
    zone = str(rng.choice(["upper zone lung", "mid zone lung", "lung base"]))
    pt = _pick_point(rng, sc.zone(side, zone))
    if pt is None:
        return []
    c = _canon(sc, pt)
    r = rng.uniform(0.008, 0.025) if kind == "nodule" else rng.uniform(0.03, 0.06)
    img, draw = sc.r.canvas()
    sc.r.polygon(draw, ellipse_pts(c[0], c[1], r, r * rng.uniform(0.8, 1.0), 20, rng.uniform(0, np.pi)))
    disk = binomial_blur(to_array(img), 2) / 255.0
    sc.density += rng.uniform(0.08, 0.3) * disk
    mask = disk > 0.5
    size_mm = r * 2 * 390  # 1 canonical unit is about 39 cm on a PA film
    hedged = kind == "nodule" and r < 0.012 and _hedge(rng, 0.5)
    return [
        Finding(
            kind,
            {"Lung Lesion": -1 if hedged else 1},
            side,
            None,
            [f"{side} {zone}", f"{side} lung"],
            {"diameter_mm": round(size_mm, 1)},
            mask,
            {"hedged": hedged},
        )
    ]


# --------------------------------------------------------------------------- bones


def rib_fracture(sc: Scene, rng, side: str) -> list[Finding]:
    k = int(rng.integers(3, 10))
    name = f"posterior {ana.ORDINALS[k - 1]} rib {side}"
    x = rng.uniform(0.6, 1.0)
    L, sg = sc.a.half_width[side], ana.SIDES[side]
    v = float(ana.posterior_rib_centre(sc.a, side, k, x))
    u = sc.a.mid + sg * x * L
    t = sc.a.rib_thickness
    tilt = rng.uniform(-0.5, 0.5)
    seg = np.array([[u - 0.2 * t * np.sin(tilt), v - 0.9 * t], [u + 0.2 * t * np.sin(tilt), v + 0.9 * t]])
    healed = rng.random() < 0.35
    sc.r.line(sc.bones_draw, seg, 0.006, fill=0)  # the break: cortex interrupted
    if healed:
        sc.r.polygon(sc.bones_draw, ellipse_pts(u, v, 0.6 * t, 0.7 * t, 14), fill=None, outline=230, width=1)
    img, draw = sc.r.canvas()
    sc.r.polygon(draw, ellipse_pts(u, v, 0.6 * t, 0.75 * t, 14))
    mask = (to_array(img) > 0) & sc.masks[name]
    return [
        Finding(
            "rib_fracture",
            {"Fracture": 1},
            side,
            "healed" if healed else "acute",
            [name],
            {"rib": k},
            mask,
            {"healed": healed},
        )
    ]


# --------------------------------------------------------------------------- devices


def _tube(sc: Scene, pts, width: float, level: int) -> np.ndarray:
    sc.r.line(sc.hard_draw, pts, width, fill=level)
    img, draw = sc.r.canvas()
    sc.r.line(draw, pts, width)
    return to_array(img) > 0


def device(sc: Scene, rng, kind: str) -> list[Finding]:
    lvl = int(rng.uniform(120, 200))
    draw = {"ett": _ett, "ng_tube": _ng_tube, "cvc": _central_line, "picc": _central_line}.get(kind, _pacemaker)
    mask, loc, params, side = draw(sc, rng, kind, lvl)
    return [Finding(kind, {"Support Devices": 1}, side, None, loc, params, mask, {})]


def _ett(sc: Scene, rng, kind: str, lvl: int):
    a, m = sc.a, sc.a.mid
    tip = a.carina_v - rng.uniform(0.015, 0.08)
    mask = _tube(sc, np.array([[m + 0.004, -0.02], [m, a.apex], [m - 0.003, tip]]), 0.01, lvl)
    return mask, ["trachea"], {"tip_above_carina_cm": round((a.carina_v - tip) * 39, 1)}, None


def _ng_tube(sc: Scene, rng, kind: str, lvl: int):
    a, m = sc.a, sc.a.mid
    cu, cv, _, _ = ana.stomach(a)
    pts = [[m + 0.01, -0.02], [m + 0.012, a.carina_v], [m + 0.025, a.dome["left"]], [cu - 0.02, cv + 0.01]]
    mask = _tube(sc, np.array([*pts, [cu + 0.03, cv - 0.005]]), 0.006, lvl)
    return mask, ["stomach"], {}, None


def _central_line(sc: Scene, rng, kind: str, lvl: int):
    """A central venous catheter (jugular or subclavian) or a PICC, its tip in the SVC."""
    a, m, params = sc.a, sc.a.mid, {}
    side = "right" if rng.random() < 0.7 else "left"
    sg = ana.SIDES[side]
    tip_v = a.carina_v + rng.uniform(0.0, 0.09)
    svc = m - a.mediastinum_half * 0.6
    if kind == "cvc" and rng.random() < 0.6:
        params["access"] = "internal jugular"
        pts = [[m + sg * 0.07, -0.02], [m + sg * 0.06, a.clavicle_v + 0.01], [svc, a.apex + 0.09], [svc, tip_v]]
    else:
        params["access"] = "subclavian" if kind == "cvc" else "arm"
        lat = m + sg * a.half_width[side] * (1.3 if kind == "picc" else 0.75)
        pts = [[lat, a.clavicle_v + 0.06], [m + sg * 0.12, a.clavicle_v + 0.035], [svc, a.apex + 0.09], [svc, tip_v]]
    mask = _tube(sc, np.array(pts), 0.005, lvl)
    params["tip"] = "cavoatrial junction" if tip_v > a.carina_v + 0.06 else "mid SVC"
    return mask, ["upper mediastinum"], params, side


def _pacemaker(sc: Scene, rng, kind: str, lvl: int):
    """Generator in the infraclavicular soft tissue, leads to the right atrium and ventricle."""
    a, m = sc.a, sc.a.mid
    side = "left" if rng.random() < 0.85 else "right"
    sg = ana.SIDES[side]
    gu, gv = m + sg * rng.uniform(0.18, 0.26), a.clavicle_v + rng.uniform(0.05, 0.09)
    sc.r.polygon(sc.hard_draw, ellipse_pts(gu, gv, 0.035, 0.026, 16, rng.uniform(-0.3, 0.3)), fill=230)
    heart_c = sc.heart_pts.mean(axis=0)
    ra = [m - a.mediastinum_half * 0.9, heart_c[1] - 0.03]
    rv = [heart_c[0] + 0.05, heart_c[1] + 0.06]
    svc = [m - a.mediastinum_half * 0.6, a.carina_v]
    mask = _tube(sc, np.array([[gu, gv], [m + sg * 0.08, gv - 0.01], svc, ra]), 0.005, 220)
    mask |= _tube(sc, np.array([svc, [ra[0] + 0.02, ra[1] - 0.02], rv]), 0.005, 220)
    img, draw = sc.r.canvas()
    sc.r.polygon(draw, ellipse_pts(gu, gv, 0.035, 0.026, 16))
    mask |= to_array(img) > 0
    return mask, ["heart", "upper mediastinum"], {}, side


# --------------------------------------------------------------------------- distractors (not findings)


def distractors(sc: Scene, rng) -> list[str]:
    """Bright or line-like things that are not findings: nipple shadows, ECG electrodes and wires, snaps, a skin
    fold, the side marker. They are not in the labels or the report; their names go to the manifest."""
    a, out = sc.a, []
    if rng.random() < 0.2:
        for s, sg in ana.SIDES.items():
            c = (a.mid + sg * a.half_width[s] * rng.uniform(0.5, 0.7), a.dome[s] - rng.uniform(0.02, 0.07))
            sc.r.polygon(sc.hard_draw, ellipse_pts(*c, 0.014, 0.012, 14), fill=int(rng.uniform(25, 60)))
        out.append("nipple shadows")
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(2, 5))):
            c = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.75)])
            sc.r.polygon(sc.hard_draw, ellipse_pts(*c, 0.016, 0.016, 14), fill=None, outline=150, width=1)
            sc.r.polygon(sc.hard_draw, ellipse_pts(*c, 0.004, 0.004, 8), fill=220)
            end = np.array([rng.choice([-0.05, 1.05]), rng.uniform(0, 1)])
            bend = (c + end) / 2 + rng.normal(0, 0.08, 2)
            sc.r.line(sc.hard_draw, np.array([c, bend, end]), 0.003, fill=90)
        out.append("ECG electrodes")
    if rng.random() < 0.08:
        for _ in range(3):
            c = np.array([a.mid + rng.normal(0, 0.03), rng.uniform(0.2, 0.8)])
            sc.r.polygon(sc.hard_draw, ellipse_pts(*c, 0.01, 0.01, 10), fill=200)
        out.append("clothing snaps")
    if rng.random() < 0.05:
        s = str(rng.choice(list(ana.SIDES)))
        sg = ana.SIDES[s]
        u = a.mid + sg * a.half_width[s] * rng.uniform(0.75, 0.95)
        pts = np.array([[u + sg * 0.06, a.apex + 0.05], [u, a.widest], [u + sg * 0.02, a.cp[s] + 0.05]])
        sc.r.line(sc.hard_draw, pts, 0.004, fill=35)
        out.append("skin fold")
    if rng.random() < 0.6:
        corner = (
            (rng.uniform(0.05, 0.12), rng.uniform(0.04, 0.1))
            if rng.random() < 0.5
            else (rng.uniform(0.86, 0.93), rng.uniform(0.04, 0.1))
        )
        xy = sc.pose(np.array([corner]))[0]
        d = sc.hard_draw
        h, w = 9 * sc.scale, 5 * sc.scale
        d.rectangle([xy[0], xy[1], xy[0] + 2 * sc.scale, xy[1] + h], fill=255)
        d.rectangle([xy[0], xy[1] + h - 2 * sc.scale, xy[0] + w, xy[1] + h], fill=255)
        out.append("side marker")
    return out
