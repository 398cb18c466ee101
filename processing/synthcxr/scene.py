"""Rasterise the anatomy of one study into CXAS-named masks and a density image.

The film is a sum of densities (bright = dense), like a projection radiograph: soft tissue of the body (thicker in
the middle), minus air in the lungs, trachea and gastric bubble, plus bones with bright cortical margins, vessels
and lung texture. Findings (findings.py) add to `density`, `texture` and `gate` before `compose()` makes a film.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as ana
from .raster import Pose, Raster, binomial_blur, ellipse_pts, smooth_noise, soft_blur, to_array

_PEDICLE = ellipse_pts(0.0, 0.0, 0.007, 0.011, 10)


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
        self.gate = np.ones(shape, np.float32)  # lung markings visible (a pneumothorax sets 0 in its gap)
        self.hard_img, self.hard_draw = self.r.canvas()  # radio-opaque devices and distractors (uint8 = density)

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
        m["heart"][:] = r.mask(self.heart_pts)
        m["aortic arch"][:] = r.mask(self.knob_pts)
        m["cardiomediastinum"][:] = r.mask(self.um_pts) | m["heart"] | m["aortic arch"]
        m["upper mediastinum"][:] = m["cardiomediastinum"] & ~m["heart"]
        m["descending aorta"][:] = r.mask(ana.descending_aorta(a)) & ~m["aortic arch"]
        trachea, carina = ana.trachea(a)
        self.trachea_pts = trachea
        m["trachea"][:], m["tracheal bifurcation"][:] = r.mask(trachea), r.mask(carina)
        m["spine"][:] = r.mask(ana.spine_outline(a))
        m["stomach"][:] = r.mask(ellipse_pts(*ana.stomach(a)))
        self.hemithorax = {side: np.zeros((self.size, self.size), bool) for side in ana.SIDES}
        r.fill_views([self.hemi_pts["right"], self.hemi_pts["left"]], [self.hemithorax["right"],
                                                                      self.hemithorax["left"]])
        pairs = ["clavicle {}", "{} hemidiaphragm", "scapula {}"]
        shapes = [ana.clavicle(a, "right"), ana.clavicle(a, "left"), ana.hemidiaphragm(a, "right"),
                  ana.hemidiaphragm(a, "left"), ana.scapula(a, "right"), ana.scapula(a, "left")]
        r.fill_views(shapes, [m[p.format(s)] for p in pairs for s in ana.SIDES])
        for side in ana.SIDES:
            m[f"{side} lung"][:] = self.hemithorax[side] & ~m["cardiomediastinum"]
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
        self.r.fill_views(shapes, views)
        for n, view in zip(names, views, strict=True):
            view &= self.masks[f"{n.split()[0]} lung"]

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
        bodies, pedicles = [], []
        for u, v0, v1 in ana.vertebrae(a):  # vertebral bodies with end plates, and pedicles
            hw = 0.03
            bodies.append(np.array([[u - hw, v0], [u + hw, v0], [u + hw * 1.05, v1], [u - hw * 1.05, v1]]))
            pedicles += [_PEDICLE + (u + s * 0.021, v0 + 0.3 * (v1 - v0)) for s in (-1, 1)]
        r.polys(draw, bodies, fill=60, outline=120, width=w)
        r.polys(draw, pedicles, fill=70, outline=170, width=w)
        post = [self.rib_shapes[n] for n in self.rib_shapes if n.startswith("posterior")]
        r.polys(draw, post, fill=55, outline=150, width=w)
        r.polys(draw, [ana.clavicle(a, s) for s in ana.SIDES], fill=150, outline=235, width=w)
        self.bones_img, self.bones_draw = img, draw  # findings may draw on it (rib fractures) before compose
        self.bone_gain = self.rng.uniform(0.22, 0.32) / 255
        ant, dant = r.canvas()
        r.polys(dant, [self.rib_shapes[n] for n in self.rib_shapes if n.startswith("anterior")], fill=55,
                outline=110, width=w)
        r.polys(dant, [ana.scapula(a, s) for s in ana.SIDES], fill=25, outline=140, width=w)
        self.density += to_array(ant).astype(np.float32) * (self.rng.uniform(0.12, 0.2) / 255)

    def _paint_vessels(self) -> None:
        """Branching pulmonary vessels from each hilum, tapering towards the periphery, plus fine texture."""
        img, draw = self.r.canvas()
        segs, widths = self._vessel_tree()
        px = self.pose(segs.reshape(-1, 2)).reshape(len(segs), -1).tolist()  # one transform for all segments
        for flat, w in zip(px, widths, strict=True):
            draw.line(flat, fill=int(255 * min(1.0, w / 0.01)), width=self.r.px(w))
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
            ang = np.linspace(-140, 140, n0) * np.pi / 180 + rng.normal(0, 0.12, n0)
            pos = np.tile([hu, hv], (n0, 1))
            length, width = np.full(n0, 0.12) * rng.uniform(0.8, 1.2, n0), 0.011
            for _depth in range(3):
                step = np.stack([s * np.cos(ang), np.sin(ang)], 1) * length[:, None]
                mid = pos + step * 0.5 + rng.normal(0, 0.006, (len(ang), 2))
                end = pos + step
                segs.append(np.stack([pos, mid, end], 1))
                widths += [width] * len(ang)
                pos = np.repeat(end, 2, axis=0)
                ang = np.repeat(ang, 2) + np.tile([-0.42, 0.42], len(ang)) + rng.normal(0, 0.15, 2 * len(ang))
                length = np.repeat(length, 2) * rng.uniform(0.55, 0.8, 2 * len(length))
                width *= 0.68
        return np.concatenate(segs), widths

    # ------------------------------------------------------------------ film
    def compose(self, exposure: dict) -> np.ndarray:
        """Turn accumulated density into an 8-bit film: lung texture, detector blur, tone curve, noise."""
        lungs = self.lungs().astype(np.float32)
        d = self.density + self.texture * lungs * self.gate
        d += to_array(self.bones_img).astype(np.float32) * self.bone_gain
        d += to_array(self.hard_img).astype(np.float32) * (1.0 / 255.0)
        d = binomial_blur(d, passes=exposure["blur_passes"])
        film = 1.0 - np.exp(-exposure["gain"] * np.clip(d, 0, None))
        film = np.clip(film * exposure["contrast"] + exposure["bias"], 0, 1) ** exposure["gamma"]
        film += (self.rng.random(film.shape, dtype=np.float32) - 0.5) * (exposure["noise"] * 2.0)
        return (np.clip(film, 0, 1) * 255 + 0.5).astype(np.uint8)
