"""Patient anatomy of a SynthCXR study, as polygons in a canonical frame.

Canonical frame: u in [0, 1] runs from image left (the patient's RIGHT, as on a PA film) to image right,
v in [0, 1] from top to bottom. The pose (shift, rotation, scale) is applied later by `render.Pose`, so every
shape here is described once, upright. Side sign `s`: -1 = patient right (image left), +1 = patient left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from modeling_asarg.configuration_asarg import cxas_class_index

from .raster import unit_circle, xy

SIDES = {"right": -1, "left": 1}
ORDINALS = ["1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th", "12th"]
N_POSTERIOR_RIBS = 10  # posterior ribs 1-10 are drawn (11 and 12 lie below the domes on a PA film)
N_ANTERIOR_RIBS = 6


def _anatomy_classes() -> tuple[str, ...]:
    names = [
        "right lung",
        "left lung",
        "heart",
        "cardiomediastinum",
        "upper mediastinum",
        "aortic arch",
        "descending aorta",
        "trachea",
        "tracheal bifurcation",
        "spine",
        "stomach",
    ]
    for side in ("right", "left"):
        names += [f"clavicle {side}", f"scapula {side}", f"{side} hemidiaphragm", f"breast {side}"]
        names += [f"posterior {ORDINALS[k]} rib {side}" for k in range(N_POSTERIOR_RIBS)]
        names += [f"anterior {ORDINALS[k]} rib {side}" for k in range(N_ANTERIOR_RIBS)]
        names += [f"{side} {z}" for z in ("apical zone lung", "upper zone lung", "mid zone lung", "lung base")]
    return tuple(sorted(names, key=cxas_class_index))  # CXAS channel order; cxas_class_index raises on a misspelt name


ANATOMY_CLASSES = _anatomy_classes()  # the SynthCXR mask channels: a named subset of the 159 CXAS classes


@dataclass
class Anatomy:
    """Sampled anatomy parameters; all lengths in canonical units (fraction of the image side)."""

    mid: float  # midline u
    half_width: dict  # side -> lateral lung extent from the midline
    apex: float  # v of the lung apices
    widest: float  # v of the widest thorax level
    cp: dict  # side -> v of the costophrenic angle
    dome: dict  # side -> v of the hemidiaphragm dome peak
    dome_peak: float  # dome peak position as a fraction of half_width
    heart_width: float  # transverse cardiac diameter (before clipping), canonical units
    heart_tilt: float  # radians, long axis towards the patient's left
    heart_aspect: float  # long/short semi-axis ratio
    mediastinum_half: float  # half-width of the upper mediastinum (SVC border)
    knob_radius: float
    knob_v: float
    carina_v: float
    rib_spacing: float
    rib_thickness: float
    clavicle_v: float
    breasts: bool
    body_margin: float  # soft tissue outside the ribs (patient size)
    extras: dict = field(default_factory=dict)

    @property
    def thorax_width(self) -> float:
        return self.half_width["right"] + self.half_width["left"]


def sample_anatomy(rng: np.random.Generator, ctr: float, mediastinal_widening: float) -> Anatomy:
    """Draw one patient. `ctr` is the target cardiothoracic ratio; `mediastinal_widening` (>= 0) widens the
    upper mediastinum (0 = normal)."""
    hw = rng.uniform(0.33, 0.38)
    half_width = {"right": hw * rng.uniform(0.97, 1.01), "left": hw * rng.uniform(0.99, 1.03)}
    apex = rng.uniform(0.10, 0.15)
    inspiration = rng.normal(0.0, 0.025)  # + = deeper breath, lower domes
    dome_r = 0.64 + inspiration + rng.normal(0, 0.01)
    dome = {"right": dome_r, "left": dome_r + rng.uniform(0.01, 0.045)}
    cp = {s: dome[s] + rng.uniform(0.085, 0.12) for s in SIDES}
    widest = apex + 0.62 * (min(cp.values()) - apex)
    rib_spacing = (dome_r - apex) / rng.uniform(8.6, 9.4)
    return Anatomy(
        mid=0.5 + rng.normal(0, 0.004),
        half_width=half_width,
        apex=apex,
        widest=widest,
        cp=cp,
        dome=dome,
        dome_peak=rng.uniform(0.42, 0.56),
        heart_width=ctr * (half_width["right"] + half_width["left"]),
        heart_tilt=np.deg2rad(rng.uniform(22, 40)),
        heart_aspect=rng.uniform(1.12, 1.35),
        mediastinum_half=rng.uniform(0.055, 0.07) * (1.0 + mediastinal_widening),
        knob_radius=rng.uniform(0.022, 0.032) * (1.0 + 0.5 * mediastinal_widening),
        knob_v=apex + rng.uniform(0.13, 0.17),
        carina_v=apex + rng.uniform(0.17, 0.21),
        rib_spacing=rib_spacing,
        rib_thickness=rib_spacing * rng.uniform(0.42, 0.52),
        clavicle_v=apex + rng.uniform(-0.01, 0.03),
        breasts=bool(rng.random() < 0.4),
        body_margin=rng.uniform(0.03, 0.10),
    )


# --------------------------------------------------------------------------- shapes


def _side_u(a: Anatomy, s: int, d):
    """u coordinate of a point at distance d from the midline on side s."""
    return a.mid + s * np.asarray(d)


# Parts of the outlines below that do not depend on the patient are computed once (@cache) and reused: the same
# numpy operations on the same inputs give the same bits, so this is only faster. Cached arrays are read-only.


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for arr in arrays:
        arr.flags.writeable = False
    return arrays


@cache
def _hemithorax_grid(n: int) -> tuple[np.ndarray, ...]:
    th = np.linspace(np.pi / 2, 0, n)
    e = 2 / 2.6  # superellipse exponent: flatter sides than an ellipse
    t = np.linspace(0, 1, 8)[1:]
    return _frozen(np.cos(th) ** e, np.sin(th) ** e, t, 1 - 0.07 * t**2, np.linspace(0.93, 0.0, n))


def _outline(u_top, v_top, u_bottom, v_bottom) -> np.ndarray:
    """`np.concatenate([np.stack([u_top, v_top], -1), np.stack([u_bottom, v_bottom], -1)[..., ::-1, :]], -2)`:
    a band outline, top edge out and bottom edge back, built in one preallocated array."""
    n = np.shape(v_top)[-1]
    out = np.empty(np.shape(v_top)[:-1] + (2 * n, 2))
    out[..., :n, 0] = u_top
    out[..., :n, 1] = v_top
    out[..., n:, 0] = u_bottom[..., ::-1]
    out[..., n:, 1] = v_bottom[..., ::-1]
    return out


def hemithorax(a: Anatomy, side: str, n: int = 28) -> np.ndarray:
    """Closed outline of one hemithorax: rounded apex, convex lateral wall, sharp costophrenic angle and the
    hemidiaphragm dome, closed along the midline (the mediastinum is carved out later, in raster space)."""
    s, L = SIDES[side], a.half_width[side]
    cos_e, sin_e, t, wall, x = _hemithorax_grid(n)
    d_top = L * cos_e
    v_top = a.widest - (a.widest - a.apex) * sin_e
    v_top += 0.06 * np.maximum(1 - d_top / (0.42 * L), 0) ** 2  # apex peaks lateral to the mediastinum
    d_wall = L * wall
    v_wall = a.widest + (a.cp[side] - a.widest) * t
    v_dome = dome_curve(a, side, x)
    d = np.concatenate([d_top, d_wall, x * L, [0.0]])
    v = np.concatenate([v_top, v_wall, v_dome, [a.apex + 0.06]])
    return xy(_side_u(a, s, d), v)


def dome_curve(a: Anatomy, side: str, x) -> np.ndarray:
    """v of the hemidiaphragm at lateral fraction x (0 = midline, 0.93 = costophrenic angle)."""
    x = np.asarray(x, dtype=float)
    p = a.dome_peak
    lateral = np.maximum((x - p) / (0.93 - p), 0) ** 1.5
    medial = np.maximum((p - x) / p, 0) ** 2
    return a.dome[side] + (a.cp[side] - a.dome[side]) * lateral + 0.035 * medial


_DOME_X = _frozen(np.linspace(0.95, 0.0, 24))[0]


def hemidiaphragm(a: Anatomy, side: str, thickness: float = 0.018) -> np.ndarray:
    s, L = SIDES[side], a.half_width[side]
    v = dome_curve(a, side, _DOME_X)
    u = _side_u(a, s, _DOME_X * L)
    return _outline(u, v, u, v + thickness)


def upper_mediastinum(a: Anatomy, heart_top: float) -> np.ndarray:
    """Mediastinum from the thoracic inlet to just below the top of the heart, with the aortic knob on the left."""
    v = np.linspace(0.0, heart_top + 0.05, 24)
    w = a.mediastinum_half
    inlet = np.clip((a.apex + 0.04 - v) / 0.08, 0, 1)  # widens into the neck at the top
    right = w * (1.0 + 0.5 * inlet)
    knob = a.knob_radius * 1.6 * np.exp(-(((v - a.knob_v) / (1.3 * a.knob_radius)) ** 2))
    left = (w - 0.008) * (1.0 + 0.5 * inlet) + knob
    return _outline(a.mid - right, v, a.mid + left, v)


def heart(a: Anatomy, n: int = 40) -> tuple[np.ndarray, float]:
    """Heart outline (tilted ellipse clipped at the diaphragm) and the v of its top."""
    phi = a.heart_tilt
    # horizontal half-extent of a tilted ellipse = sqrt(A^2 cos^2 + B^2 sin^2); solve for A with A = k B
    k = a.heart_aspect
    B = (a.heart_width / 2) / np.sqrt((k * np.cos(phi)) ** 2 + np.sin(phi) ** 2)
    A = k * B
    half_h = np.sqrt((A * np.sin(phi)) ** 2 + (B * np.cos(phi)) ** 2)
    base = max(a.dome["right"], a.dome["left"]) + 0.05  # heart sits on (and projects below) the domes
    cv = base - 0.72 * half_h
    cu = a.mid + a.heart_width * (0.5 - 0.33)  # about a third of the heart lies right of the midline
    cos_t, sin_t = unit_circle(n)
    x, y = A * cos_t, B * sin_t
    u = cu + x * np.cos(phi) - y * np.sin(phi)
    v = cv + x * np.sin(phi) + y * np.cos(phi)
    v = np.minimum(v, base)
    return xy(u, v), float(cv - half_h)


def aortic_knob(a: Anatomy) -> tuple[float, float, float]:
    return a.mid + a.mediastinum_half + 0.2 * a.knob_radius, a.knob_v, a.knob_radius


def descending_aorta(a: Anatomy, width: float = 0.03) -> np.ndarray:
    u0, v0, _ = aortic_knob(a)
    v = np.linspace(v0, a.dome["left"] + 0.04, 10)
    u = a.mid + 0.035 + (u0 - a.mid - 0.035) * np.exp(-(v - v0) / 0.05)
    return _outline(u - width / 2, v, u + width / 2, v)


def trachea(a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Trachea outline (air column, slightly pushed right by the aortic knob) and the carina region."""
    v = np.linspace(0.0, a.carina_v, 14)
    shift = -0.008 * np.exp(-(((v - a.knob_v) / 0.05) ** 2))
    w = 0.019
    outline = _outline(a.mid + shift - w, v, a.mid + shift + w, v)
    c = a.carina_v
    carina = np.array(
        [[a.mid - 0.03, c - 0.015], [a.mid + 0.03, c - 0.015], [a.mid + 0.045, c + 0.03], [a.mid - 0.04, c + 0.03]]
    )
    return outline, carina


def bronchi(a: Anatomy) -> list[np.ndarray]:
    c = a.carina_v
    right = np.array([[a.mid - 0.006, c], [a.mid - 0.045, c + 0.045], [a.mid - 0.07, c + 0.075]])
    left = np.array([[a.mid + 0.006, c], [a.mid + 0.06, c + 0.035], [a.mid + 0.09, c + 0.06]])
    return [right, left]


def vertebrae(a: Anatomy) -> list[tuple[float, float, float]]:
    """(u, v_top, v_bottom) of each vertebral body from the top of the image down; T1 sits near the apex."""
    h = a.rib_spacing
    out, v = [], a.apex - 2.2 * h
    while v < 1.02:
        out.append((a.mid, v, v + 0.8 * h))
        v += h * (1.0 + 0.02 * len(out))
    return out


def spine_outline(a: Anatomy) -> np.ndarray:
    w = 0.036
    return np.array([[a.mid - w, -0.02], [a.mid + w, -0.02], [a.mid + w * 1.15, 1.02], [a.mid - w * 1.15, 1.02]])


def _rib_curve_terms(k, x) -> tuple:
    """The patient-independent factors of `posterior_rib_centre` for rib numbers k at lateral fractions x."""
    k = np.asarray(k)
    first = k == 1
    peak = np.where(first, 0.3, 0.42)
    x = np.asarray(x, dtype=float)
    up = 1 - np.maximum(1 - x / peak, 0) ** 2
    down = np.maximum((x - peak) / (1.07 - peak), 0) ** 2.4
    return k - 1, 1.0 + 0.03 * (k - 1), np.where(first, 0.8, 1.3), np.where(first, 1.6, 2.8), up, down


def _rib_curve(a: Anatomy, terms: tuple) -> np.ndarray:
    km1, growth, rise, fall, up, down = terms
    sp = a.rib_spacing
    v0 = a.apex + 0.02 + km1 * sp * growth
    return v0 - rise * sp * up + fall * sp * down


def posterior_rib_centre(a: Anatomy, side: str, k: int, x) -> np.ndarray:
    """v of the centre line of posterior rib k at lateral fraction x (0 = midline, 1 = lateral lung edge)."""
    return _rib_curve(a, _rib_curve_terms(k, x))


@cache
def _posterior_grid(n: int) -> tuple:
    ks = np.arange(1, N_POSTERIOR_RIBS + 1)[:, None]
    reach = np.where(ks > 1, 1.07, 0.75)
    x = 0.05 + (reach - 0.05) * np.linspace(0, 1, n)[None, :]
    terms = _frozen(*_rib_curve_terms(ks, x))
    sx = {s: _frozen(s * x)[0] for s in SIDES.values()}
    return terms, np.where(ks == 1, 0.7, 1.0), _frozen(0.7 + 0.3 * np.clip(x / 0.25, 0, 1))[0], sx


def posterior_ribs(a: Anatomy, side: str, n: int = 16) -> list[np.ndarray]:
    """Outlines of posterior ribs 1..10 of one side, in one broadcast. Each rib leaves the spine, arcs up and out,
    then curves down along the chest wall; rib 1 is shorter and thinner."""
    s, L = SIDES[side], a.half_width[side]
    terms, first_thin, taper, sx = _posterior_grid(n)
    v = _rib_curve(a, terms)
    t = a.rib_thickness * first_thin * taper
    u = a.mid + sx[s] * L
    return list(_outline(u, v - t / 2, u, v + t / 2))


@cache
def _anterior_grid(n: int) -> tuple:
    ks = np.arange(1, N_ANTERIOR_RIBS + 1)[:, None]
    end = 0.3 + 0.03 * ks
    x = 1.07 + (end - 1.07) * np.linspace(0, 1, n)[None, :]
    sx = {s: _frozen(s * x)[0] for s in SIDES.values()}
    return _frozen(*_rib_curve_terms(ks, 1.07)), 1.3 + 0.1 * ks, _frozen(((1.07 - x) / 0.75) ** 1.1)[0], sx


def anterior_ribs(a: Anatomy, side: str, n: int = 12) -> list[np.ndarray]:
    """Anterior ribs 1..6: each continues from the lateral end of its posterior rib, running medially and downward
    to the costal cartilage (not radio-opaque, so the rib stops short of the sternum)."""
    s, L = SIDES[side], a.half_width[side]
    lateral_terms, drop, fall, sx = _anterior_grid(n)
    v_lat = _rib_curve(a, lateral_terms)
    v = v_lat + drop * a.rib_spacing * fall
    t = 0.75 * a.rib_thickness
    u = a.mid + sx[s] * L
    return list(_outline(u, v - t / 2, u, v + t / 2))


@cache
def _clavicle_grid() -> tuple[np.ndarray, ...]:
    x = np.linspace(0.1, 1.15, 18)
    return _frozen(x, 0.07 * x, 0.025 * np.sin(np.pi * x / 1.15), 0.026 * (1.15 - 0.25 * np.sin(np.pi * x / 1.15)))


def clavicle(a: Anatomy, side: str) -> np.ndarray:
    s, L = SIDES[side], a.half_width[side]
    x, slope, bow, t = _clavicle_grid()
    v = a.clavicle_v + 0.03 - slope + bow
    u = _side_u(a, s, x * L)
    return _outline(u, v - t / 2, u, v + t / 2)


def scapula(a: Anatomy, side: str) -> np.ndarray:
    s, L = SIDES[side], a.half_width[side]
    pts = [
        (1.25, a.apex - 0.03),
        (0.88, a.apex + 0.03),
        (0.86, a.apex + 0.10),
        (1.05, a.apex + 0.30),
        (1.3, a.apex + 0.2),
    ]
    return np.array([[_side_u(a, s, d * L), v] for d, v in pts])


def body(a: Anatomy) -> np.ndarray:
    """Soft-tissue outline: neck, shoulders, chest wall and flanks down to the bottom of the image."""
    m = a.mid
    wall = max(a.half_width.values()) + a.body_margin
    pts_r = [
        (m - 0.085, -0.05),
        (m - 0.095, a.apex - 0.09),
        (m - 0.16, a.apex - 0.075),
        (m - 0.26, a.apex - 0.06),
        (m - wall - 0.03, a.apex - 0.03),
        (m - wall - 0.045, a.apex + 0.04),
        (m - wall - 0.02, a.widest),
        (m - wall + 0.01, 1.05),
    ]
    pts_l = [(2 * m - u, v) for u, v in reversed(pts_r)]
    return np.array(pts_r + pts_l)


def breast(a: Anatomy, side: str) -> tuple[float, float, float, float]:
    s, L = SIDES[side], a.half_width[side]
    return _side_u(a, s, 0.6 * L), a.dome[side] - 0.01, 0.55 * L, 0.12


def stomach(a: Anatomy) -> tuple[float, float, float, float]:
    L = a.half_width["left"]
    return a.mid + 0.5 * L, a.dome["left"] + 0.075, 0.11, 0.06


def zone_bands(a: Anatomy, side: str) -> dict[str, tuple[float, float]]:
    """Vertical extent (v0, v1) of the lung zones, as fractions of apex-to-costophrenic height."""
    top, bot = a.apex - 0.05, a.cp[side] + 0.05
    h = a.cp[side] - a.apex
    cuts = [top, a.apex + 0.12 * h, a.apex + 0.38 * h, a.apex + 0.64 * h, bot]
    names = [f"{side} apical zone lung", f"{side} upper zone lung", f"{side} mid zone lung", f"{side} lung base"]
    return {n: (cuts[i], cuts[i + 1]) for i, n in enumerate(names)}


def hilum(a: Anatomy, side: str) -> tuple[float, float]:
    s = SIDES[side]
    return _side_u(a, s, a.mediastinum_half + 0.045), a.carina_v + 0.07
