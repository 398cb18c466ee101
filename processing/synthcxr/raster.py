"""Pose transform and fast rasterisation (PIL's C polygon filler; no image resampling of the anatomy).

Shapes are posed by transforming their vertices, then filled directly at the output size, so masks are exact
rasterisations of the posed anatomy. Speed matters (>= 50 studies/s at 256 px with masks, one core), which is
why masks of non-overlapping structures share one label canvas, arrays leave PIL through `tobytes`, and blurs
are either a numpy binomial filter (small radii) or a blur at reduced resolution (large radii).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


class Pose:
    """Canonical [0,1]^2 -> pixel coordinates: scale (with patient aspect), rotation and shift about the centre."""

    def __init__(self, size: int, scale: float, aspect: float, angle_deg: float, shift: tuple[float, float]):
        t = np.deg2rad(angle_deg)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        lin = rot @ np.diag([scale * aspect, scale])
        self.size = size
        self.lin = lin * size
        self.off = (np.array([0.5, 0.5]) - lin @ np.array([0.5, 0.5]) + np.asarray(shift)) * size
        self.px_per_unit = size * scale  # for widths given in canonical units

    def __call__(self, pts) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) @ self.lin.T + self.off

    def inverse(self, px) -> np.ndarray:
        return (np.asarray(px, dtype=np.float64) - self.off) @ np.linalg.inv(self.lin).T


def ellipse_pts(cu: float, cv: float, ru: float, rv: float, n: int = 28, angle: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = ru * np.cos(t), rv * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cu + c * x - s * y, cv + s * x + c * y], axis=1)


def to_array(img: Image.Image) -> np.ndarray:
    """uint8 array of an 'L' image (tobytes is several times faster than np.asarray for small images)."""
    return np.frombuffer(img.tobytes(), np.uint8).reshape(img.size[1], img.size[0])


class Raster:
    """Draws posed shapes into uint8 canvases of the output size."""

    def __init__(self, pose: Pose):
        self.pose = pose
        self.size = pose.size

    def canvas(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.size, self.size), 0)
        return img, ImageDraw.Draw(img)

    def flat(self, pts) -> list[float]:
        return self.pose(pts).ravel().tolist()

    def px(self, width: float) -> int:
        return max(1, int(round(width * self.pose.px_per_unit)))

    def polygon(self, draw, pts, fill: int = 255, outline: int | None = None, width: int = 1) -> None:
        draw.polygon(self.flat(pts), fill=fill, outline=outline, width=width)

    def line(self, draw, pts, width: float, fill: int = 255) -> None:
        draw.line(self.flat(pts), fill=fill, width=self.px(width), joint="curve")

    def mask(self, pts) -> np.ndarray:
        img, draw = self.canvas()
        self.polygon(draw, pts)
        return to_array(img) > 0

    def batch(self, shapes: list) -> tuple[list[list[float]], np.ndarray, np.ndarray]:
        """Pose many shapes with one matrix product: flat pixel lists and integer bounding boxes (lo, hi)."""
        lens = [len(p) for p in shapes]
        px = self.pose(np.concatenate(shapes))
        starts = np.cumsum([0] + lens[:-1])
        lo = np.minimum.reduceat(px, starts, axis=0).astype(int) - 1
        hi = np.maximum.reduceat(px, starts, axis=0).astype(int) + 2
        flats = [px[a:a + n].ravel().tolist() for a, n in zip(starts, lens, strict=True)]
        return flats, np.clip(lo, 0, self.size), np.clip(hi, 0, self.size)

    def polys(self, draw, shapes: list, fill, outline=None, width: int = 1) -> None:
        for flat in self.batch(shapes)[0]:
            draw.polygon(flat, fill=fill, outline=outline, width=width)

    def fill_views(self, shapes: list, views: list) -> None:
        """Rasterise non-overlapping shapes on one canvas and write each into its bool view, comparing only inside
        the shape's bounding box (full-image comparisons per rib dominated the run time)."""
        img, draw = self.canvas()
        flats, lo, hi = self.batch(shapes)
        for i, flat in enumerate(flats, start=1):
            draw.polygon(flat, fill=i)
        lab = to_array(img)
        for i, (view, (x0, y0), (x1, y1)) in enumerate(zip(views, lo.tolist(), hi.tolist(), strict=True), start=1):
            view[y0:y1, x0:x1] = lab[y0:y1, x0:x1] == i

    def labels(self, shapes: list) -> np.ndarray:
        """Paint shapes with values 1..n on one canvas (for structures that do not overlap each other)."""
        img, draw = self.canvas()
        for i, pts in enumerate(shapes, start=1):
            self.polygon(draw, pts, fill=i)
        return to_array(img)


def binomial_blur(a: np.ndarray, passes: int = 1) -> np.ndarray:
    """Separable [1,2,1]/4 filter, `passes` times (sigma = 0.71 * sqrt(passes) px); edges replicated."""
    a = a.astype(np.float32)  # always a copy: callers may pass views of PIL buffers
    tmp = np.empty_like(a)
    for _ in range(passes):
        for src, dst in ((a, tmp), (tmp.T, a.T)):  # rows then columns, through a transposed view
            dst[:, 1:-1] = src[:, :-2] + src[:, 2:]
            dst[:, 1:-1] += 2 * src[:, 1:-1]
            dst[:, 0] = 3 * src[:, 0] + src[:, 1]
            dst[:, -1] = 3 * src[:, -1] + src[:, -2]
            dst *= 0.25
    return a


def soft_blur(layer, sigma_px: float) -> np.ndarray:
    """Large-radius blur of a bool/uint8 layer, done at 1/4 resolution; float32 in [0, 1]."""
    img = layer if isinstance(layer, Image.Image) else Image.fromarray(
        layer.astype(np.uint8) * 255 if layer.dtype == bool else layer)
    n = img.size[0]
    f = 4 if n >= 128 else 2
    small = img.reduce(f).filter(ImageFilter.GaussianBlur(max(0.5, sigma_px / f)))
    return to_array(small.resize((n, n), Image.BILINEAR)).astype(np.float32) * (1.0 / 255.0)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: random cells upsampled bicubically (cheap stand-in for a GRF)."""
    small = rng.standard_normal((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), dtype=np.float32)
