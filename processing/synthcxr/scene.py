"""Rasterise the anatomy of one study into CXAS-named masks and a density image.

The film is a sum of densities (bright = dense), like a projection radiograph: soft tissue of the body (thicker in
the middle), minus air in the lungs, trachea and gastric bubble, plus bones with bright cortical margins, vessels
and lung texture. Findings (findings.py) add to `density`, `texture` and `gate` before `compose()` makes a film.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import anatomy as ana
from .raster import Pose, Raster, binomial_blur, ellipse_pts, smooth_noise, soft_blur, to_array, xy

_PEDICLE = ellipse_pts(0.0, 0.0, 0.007, 0.011, 10)
_VESSEL_ANGLES = np.linspace(-140, 140, 9) * np.pi / 180
_VESSEL_ANGLES.flags.writeable = False


@cache
def _fork(n: int) -> np.ndarray:
    """Angle offsets of the two daughter branches of n vessels (the same array as np.tile([-0.42, 0.42], n))."""
    out = np.tile([-0.42, 0.42], n)
    out.flags.writeable = False
    return out


class Scene:
    def __init__(self, rng: np.random.Generator, a: ana.Anatomy, pose: Pose):
        self.rng, self.a, self.pose = rng, a, pose
        self.r = Raster(pose)
        self.size = pose.size
        self.scale = pose.px_per_unit / 256.0  # widths/radii in pixels below are tuned for a 256-px film
        self.heart_pts, self.heart_top = ana.heart(a)
        shape = (self.size, self.size)
        self.density = np.zeros(shape, np.float32)
        self.texture = np.zeros(shape, np.float32)
        self._gate = None  # lung markings visible: all ones until a finding changes it (see `gate`)
        self.hard_img, self.hard_draw = self.r.canvas()  # radio-opaque devices and distractors (uint8 = density)

    @property
    def gate(self) -> np.ndarray:
        """float32 (H, W): 1 where lung markings are visible (a pneumothorax sets 0 in its gap, fluid and airspace
        opacities lower it). Made on first use; until then it is all ones and `compose` skips multiplying by it
        (x * 1.0 == x exactly)."""
        if self._gate is None:
            self._gate = np.ones((self.size, self.size), np.float32)
        return self._gate

    @gate.setter
    def gate(self, value: np.ndarray) -> None:
        self._gate = value

    # ------------------------------------------------------------------ masks
    def build_masks(self) -> None:
        """Fill `self.stack` (K, H, W), one channel per ANATOMY_CLASSES name; `self.masks[name]` are views of it."""
        a, r = self.a, self.r
        self.stack = np.zeros((len(ana.ANATOMY_CLASSES), self.size, self.size), bool)
        m = self.masks = {n: self.stack[i] for i, n in enumerate(ana.ANATOMY_CLASSES)}
        self.hemi_pts = {side: ana.hemithorax(a, side) for side in ana.SIDES}
        self.um_pts = ana.upper_mediastinum(a, self.heart_top)
        knob = ana.aortic_knob(a)
        self.knob_pts = ellipse_pts(knob[0], knob[1], knob[2], knob[2])
        r.mask_into(self.heart_pts, m["heart"])  # each mask is painted straight into its (all False) channel
        r.mask_into(self.knob_pts, m["aortic arch"])
        cm = r.mask_into(self.um_pts, m["cardiomediastinum"])
        cm |= m["heart"]
        cm |= m["aortic arch"]
        np.greater(cm, m["heart"], out=m["upper mediastinum"])  # a & ~b, for bool arrays
        np.greater(
            r.mask_into(ana.descending_aorta(a), m["descending aorta"]), m["aortic arch"], out=m["descending aorta"]
        )
        trachea, carina = ana.trachea(a)
        self.trachea_pts = trachea
        r.mask_into(trachea, m["trachea"])
        r.mask_into(carina, m["tracheal bifurcation"])
        r.mask_into(ana.spine_outline(a), m["spine"])
        r.mask_into(ellipse_pts(*ana.stomach(a)), m["stomach"])
        self.hemithorax = {side: np.zeros((self.size, self.size), bool) for side in ana.SIDES}
        r.fill_views(
            [self.hemi_pts["right"], self.hemi_pts["left"]], [self.hemithorax["right"], self.hemithorax["left"]]
        )
        pairs = ["clavicle {}", "{} hemidiaphragm", "scapula {}"]
        self.clavicle_pts = {s: ana.clavicle(a, s) for s in ana.SIDES}
        self.scapula_pts = {s: ana.scapula(a, s) for s in ana.SIDES}
        shapes = [
            self.clavicle_pts["right"],
            self.clavicle_pts["left"],
            ana.hemidiaphragm(a, "right"),
            ana.hemidiaphragm(a, "left"),
            self.scapula_pts["right"],
            self.scapula_pts["left"],
        ]
        r.fill_views(shapes, [m[p.format(s)] for p in pairs for s in ana.SIDES])
        for side in ana.SIDES:
            np.greater(self.hemithorax[side], cm, out=m[f"{side} lung"])
        self._build_ribs()
        self._build_zones()
        if a.breasts:
            r.fill_views([ellipse_pts(*ana.breast(a, s)) for s in ana.SIDES], [m["breast right"], m["breast left"]])

    def _build_ribs(self) -> None:
        a, names, shapes = self.a, [], []
        for side in ana.SIDES:
            names += [f"posterior {ana.ORDINALS[k]} rib {side}" for k in range(ana.N_POSTERIOR_RIBS)]
            shapes += ana.posterior_ribs(a, side)
            names += [f"anterior {ana.ORDINALS[k]} rib {side}" for k in range(ana.N_ANTERIOR_RIBS)]
            shapes += ana.anterior_ribs(a, side)
        self.rib_shapes = dict(zip(names, shapes, strict=True))
        post = [n for n in names if n.startswith("posterior")]
        ant = [n for n in names if n.startswith("anterior")]
        for group in (post, ant):  # ribs of one group never overlap each other; the two groups do
            self.r.fill_views([self.rib_shapes[n] for n in group], [self.masks[n] for n in group])

    def _build_zones(self) -> None:
        names, shapes = [], []
        for side, s in ana.SIDES.items():
            u0, u1 = (-0.5, self.a.mid) if s < 0 else (self.a.mid, 1.5)
            for zone, (v0, v1) in ana.zone_bands(self.a, side).items():
                names.append(zone)
                shapes.append(np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]))
        views = [self.masks[n] for n in names]
        boxes = self.r.fill_views(shapes, views)
        for n, view, box in zip(names, views, boxes, strict=True):  # outside its box a view is all False
            view[box] &= self.masks[f"{n.split()[0]} lung"][box]

    def lungs(self) -> np.ndarray:
        return self.masks["right lung"] | self.masks["left lung"]

    def zone(self, side: str, which: str) -> np.ndarray:
        return self.masks[f"{side} {which}"]

    # ------------------------------------------------------------------ density
    def paint_anatomy(self) -> None:
        self._paint_soft_tissue()
        self._paint_bones()
        self._paint_vessels()

    def _paint_soft_tissue(self) -> None:
        """Painter's algorithm on one canvas: body, aerated hemithoraces, mediastinum, airways, gastric bubble."""
        a, r, rng = self.a, self.r, self.rng
        img, draw = r.canvas()
        r.polygon(draw, ana.body(a), fill=200)
        for side in ana.SIDES:
            r.polygon(draw, self.hemi_pts[side], fill=int(rng.uniform(30, 50)))
        r.polygon(draw, self.um_pts, fill=205)
        r.polygon(draw, self.heart_pts, fill=int(rng.uniform(205, 222)))
        r.polygon(draw, self.knob_pts, fill=215)
        r.polygon(draw, self.trachea_pts, fill=int(rng.uniform(120, 150)))
        for b in ana.bronchi(a):
            r.line(draw, b, 0.02, fill=160)
        cu, cv, ru, rv = ana.stomach(a)
        bubble = ellipse_pts(cu + rng.normal(0, 0.01), cv - 0.012, ru * rng.uniform(0.3, 0.7), rv * 0.45)
        r.polygon(draw, bubble, fill=int(rng.uniform(110, 180)))
        r.polygon(draw, ana.hemidiaphragm(a, "left", 0.012), fill=200)
        soft = binomial_blur(to_array(img), passes=3) * (1.0 / 200.0)
        # the beam crosses less tissue near the flanks: thickness ~ chord of an ellipse across the body
        cols = self.pose.inverse(np.stack([np.arange(self.size) + 0.5, np.full(self.size, self.size / 2)], 1))[:, 0]
        half = max(a.half_width.values()) + a.body_margin + 0.04
        chord = np.sqrt(np.clip(1 - ((cols - a.mid) / half) ** 2, 0.05, 1)).astype(np.float32)
        rows = (np.arange(self.size, dtype=np.float32) / self.size)[:, None]
        vertical = 1.0 + 0.12 * (rows - 0.5)  # more tissue (abdomen, shoulders) low in the film
        self.density += soft * (0.25 + 0.75 * chord[None, :]) * vertical
        if a.breasts:
            self.density += 0.1 * soft_blur(self.masks["breast right"] | self.masks["breast left"], 6 * self.scale)

    def _paint_bones(self) -> None:
        a, r = self.a, self.r
        w = max(1, int(round(1.2 * self.scale)))
        img, draw = r.canvas()
        hw, spine = 0.03, ana.vertebrae(a)  # vertebral bodies with end plates, and pedicles
        bodies = np.array(
            [[[u - hw, v0], [u + hw, v0], [u + hw * 1.05, v1], [u - hw * 1.05, v1]] for u, v0, v1 in spine]
        )
        centres = np.array([[u + s * 0.021, v0 + 0.3 * (v1 - v0)] for u, v0, v1 in spine for s in (-1, 1)])
        r.polys(draw, list(bodies), fill=60, outline=120, width=w)
        r.polys(draw, list(_PEDICLE + centres[:, None, :]), fill=70, outline=170, width=w)
        post = [self.rib_shapes[n] for n in self.rib_shapes if n.startswith("posterior")]
        r.polys(draw, post, fill=55, outline=150, width=w)
        r.polys(draw, list(self.clavicle_pts.values()), fill=150, outline=235, width=w)
        self.bones_img, self.bones_draw = img, draw  # findings may draw on it (rib fractures) before compose
        self.bone_gain = self.rng.uniform(0.22, 0.32) / 255
        ant, dant = r.canvas()
        r.polys(
            dant,
            [self.rib_shapes[n] for n in self.rib_shapes if n.startswith("anterior")],
            fill=55,
            outline=110,
            width=w,
        )
        r.polys(dant, list(self.scapula_pts.values()), fill=25, outline=140, width=w)
        self.density += to_array(ant).astype(np.float32) * (self.rng.uniform(0.12, 0.2) / 255)

    def _paint_vessels(self) -> None:
        """Branching pulmonary vessels from each hilum, tapering towards the periphery, plus fine texture."""
        img, draw = self.r.canvas()
        segs, widths = self._vessel_tree()
        px = self.pose(segs.reshape(-1, 2)).reshape(len(segs), -1).tolist()  # one transform for all segments
        core, style = draw.draw, {}  # ImageDraw.line's one call for a plain line, minus its overhead
        for flat, w in zip(px, widths, strict=True):
            if w not in style:
                style[w] = (core.draw_ink(int(255 * min(1.0, w / 0.01))), self.r.px(w))
            core.draw_lines(flat, *style[w])
        for side in ana.SIDES:
            hu, hv = ana.hilum(self.a, side)
            self.r.polygon(draw, ellipse_pts(hu, hv, 0.02, 0.035, 12), fill=150)
        vessels = binomial_blur(to_array(img), passes=2) * (1.0 / 255.0)
        noise = smooth_noise(self.rng, self.size, 40)
        self.texture += self.rng.uniform(0.14, 0.24) * vessels + 0.025 * noise

    def _vessel_tree(self) -> tuple[np.ndarray, list[float]]:
        """Segments (N, 3, 2) of two vessel trees, grown breadth-first with numpy, and their widths."""
        rng, segs, widths = self.rng, [], []
        for side, s in ana.SIDES.items():
            hu, hv = ana.hilum(self.a, side)
            n0 = 9
            ang = _VESSEL_ANGLES + rng.normal(0, 0.12, n0)
            pos = np.array([[hu, hv]] * n0)
            length, width = np.full(n0, 0.12) * rng.uniform(0.8, 1.2, n0), 0.011
            for _depth in range(3):
                n = len(ang)
                step = xy(s * np.cos(ang), np.sin(ang)) * length[:, None]
                mid = pos + step * 0.5 + rng.normal(0, 0.006, (n, 2))
                end = pos + step
                seg = np.empty((n, 3, 2))
                seg[:, 0], seg[:, 1], seg[:, 2] = pos, mid, end
                segs.append(seg)
                widths += [width] * n
                pos = np.repeat(end, 2, axis=0)
                ang = np.repeat(ang, 2) + _fork(n) + rng.normal(0, 0.15, 2 * n)
                length = np.repeat(length, 2) * rng.uniform(0.55, 0.8, 2 * len(length))
                width *= 0.68
        return np.concatenate(segs), widths

    # ------------------------------------------------------------------ film
    def compose(self, exposure: dict) -> np.ndarray:
        """Turn accumulated density into an 8-bit film: lung texture, detector blur, tone curve, noise. (In-place
        steps: the same float32 operations, in the same order, as the one-expression-per-line version.)"""
        d = self.texture * self.lungs().astype(np.float32)
        if self._gate is not None:
            d *= self._gate
        np.add(self.density, d, out=d)
        for layer, gain in ((self.bones_img, self.bone_gain), (self.hard_img, 1.0 / 255.0)):
            dense = to_array(layer).astype(np.float32)
            dense *= gain
            d += dense
        film = binomial_blur(d, passes=exposure["blur_passes"])
        np.maximum(film, 0, out=film)  # = np.clip(film, 0, None)
        film *= -exposure["gain"]
        np.exp(film, out=film)
        np.subtract(1.0, film, out=film)
        film *= exposure["contrast"]
        film += exposure["bias"]
        np.clip(film, 0, 1, out=film)
        film **= exposure["gamma"]
        noise = self.rng.random(film.shape, dtype=np.float32)
        noise -= 0.5
        noise *= exposure["noise"] * 2.0
        film += noise
        np.clip(film, 0, 1, out=film)
        film *= 255
        film += 0.5
        return film.astype(np.uint8)
