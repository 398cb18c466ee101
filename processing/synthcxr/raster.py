"""Pose transform and fast rasterisation (PIL's C polygon filler; no image resampling of the anatomy).

Shapes are posed by transforming their vertices, then filled directly at the output size, so masks are exact
rasterisations of the posed anatomy. Speed matters (>= 50 studies/s at 256 px with masks, one core), which is
why masks of non-overlapping structures share one label canvas, single masks are painted straight into their
channel of the mask stack (`draw_into`), arrays leave PIL through `tobytes`, and blurs are either a numpy
binomial filter (small radii) or a blur at reduced resolution (large radii).

synthcxr-v1 is frozen, so every speed-up here must give the same bits: the same numpy/PIL operations on the same
inputs, in the same order (only their overhead is cut: cached constants, in-place steps, no temporary canvases).
In particular `Pose` keeps calling the same matrix product on the same arrays.
"""

from __future__ import annotations

from functools import cache
from itertools import accumulate

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
        self._lin_t = self.lin.T
        self.off = (np.array([0.5, 0.5]) - lin @ np.array([0.5, 0.5]) + np.asarray(shift)) * size
        self.px_per_unit = size * scale  # for widths given in canonical units
        self._inv_t = None

    def __call__(self, pts) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) @ self._lin_t + self.off

    def inverse(self, px) -> np.ndarray:
        if self._inv_t is None:
            self._inv_t = np.linalg.inv(self.lin).T
        return (np.asarray(px, dtype=np.float64) - self.off) @ self._inv_t


@cache
def unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of n equally spaced angles (computed once per n: the same arrays, so the same bits)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    cos, sin = np.cos(t), np.sin(t)
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


def ellipse_pts(cu: float, cv: float, ru: float, rv: float, n: int = 28, angle: float = 0.0) -> np.ndarray:
    cos_t, sin_t = unit_circle(n)
    x, y = ru * cos_t, rv * sin_t
    c, s = np.cos(angle), np.sin(angle)
    return xy(cu + c * x - s * y, cv + s * x + c * y)


def xy(u, v) -> np.ndarray:
    """`np.stack([u, v], axis=-1)` for two float arrays of one shape, without np.stack's overhead."""
    u = np.asarray(u)
    out = np.empty(u.shape + (2,))
    out[..., 0] = u
    out[..., 1] = v
    return out


def to_array(img: Image.Image) -> np.ndarray:
    """uint8 array of an 'L' image (tobytes is several times faster than np.asarray for small images)."""
    return np.frombuffer(img.tobytes(), np.uint8).reshape(img.size[1], img.size[0])


def draw_into(arr: np.ndarray):
    """A PIL drawing object (`ImagingDraw`, the C object behind ImageDraw.Draw(...).draw) that paints straight into
    `arr`, a C-contiguous (H, W) uint8 or bool array: no canvas to allocate and no copy out of PIL. Painting a bool
    array with ink 1 gives the mask of the shape: the same pixels as filling a canvas and testing > 0."""
    buf = arr.view(np.uint8)
    if not buf.flags.c_contiguous or buf.ndim != 2:
        raise ValueError("draw_into needs a C-contiguous 2-D array")
    return Image.core.draw(Image.core.map_buffer(buf, (buf.shape[1], buf.shape[0]), "raw", 0, ("L", 0, 1)), 0)


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
        if outline is None and fill is not None:  # what ImageDraw.polygon does for a plain fill, minus its overhead
            draw.draw.draw_polygon(self.flat(pts), draw.draw.draw_ink(fill), 1)
        else:
            draw.polygon(self.flat(pts), fill=fill, outline=outline, width=width)

    def line(self, draw, pts, width: float, fill: int = 255) -> None:
        draw.line(self.flat(pts), fill=fill, width=self.px(width), joint="curve")

    def mask_into(self, pts, out: np.ndarray) -> np.ndarray:
        """Set the pixels of polygon `pts` in the bool (H, W) array `out` (C-contiguous, e.g. a channel of a mask
        stack); pixels already set stay set."""
        draw_into(out).draw_polygon(self.flat(pts), 1, 1)
        return out

    def mask(self, pts) -> np.ndarray:
        return self.mask_into(pts, np.zeros((self.size, self.size), bool))

    def batch(self, shapes: list) -> tuple[list[list[float]], list[list[int]], list[list[int]]]:
        """Pose many shapes with one matrix product: flat pixel lists and integer bounding boxes (lo, hi), as lists
        of [x, y], clipped to the canvas."""
        lens = [len(p) for p in shapes]
        px = self.pose(np.concatenate(shapes))
        flat = px.ravel().tolist()
        starts = [0, *accumulate(lens[:-1])]
        flats = [flat[2 * a : 2 * (a + n)] for a, n in zip(starts, lens, strict=True)]
        n = self.size
        lo = np.minimum(np.maximum(np.minimum.reduceat(px, starts, axis=0).astype(int) - 1, 0), n).tolist()
        hi = np.minimum(np.maximum(np.maximum.reduceat(px, starts, axis=0).astype(int) + 2, 0), n).tolist()
        return flats, lo, hi

    def polys(self, draw, shapes: list, fill: int, outline: int | None = None, width: int = 1) -> None:
        core = draw.draw
        fill_ink = core.draw_ink(fill)
        ink = None if outline is None else core.draw_ink(outline)
        for flat in self.batch(shapes)[0]:  # ImageDraw.polygon's calls for a fill and a 1-px outline
            core.draw_polygon(flat, fill_ink, 1)
            if ink is not None and ink != fill_ink:
                if width == 1:
                    core.draw_polygon(flat, ink, 0, 1)
                else:
                    draw.polygon(flat, outline=outline, width=width)

    def fill_views(self, shapes: list, views: list) -> list[tuple[slice, slice]]:
        """Rasterise shapes on one label canvas (a later shape wins where two overlap) and write each into its bool
        view, which must be all False: only the shape's bounding box is compared (full-image comparisons per rib
        dominated the run time). Returns the (rows, cols) slices of the bounding boxes."""
        lab = np.zeros((self.size, self.size), np.uint8)
        core = draw_into(lab)
        flats, lo, hi = self.batch(shapes)
        for i, flat in enumerate(flats, start=1):
            core.draw_polygon(flat, i, 1)
        boxes = []
        for i, (view, (x0, y0), (x1, y1)) in enumerate(zip(views, lo, hi, strict=True), start=1):
            box = (slice(y0, y1), slice(x0, x1))
            np.equal(lab[box], i, out=view[box])
            boxes.append(box)
        return boxes

    def labels(self, shapes: list) -> np.ndarray:
        """Paint shapes with values 1..n on one canvas (for structures that do not overlap each other)."""
        img, draw = self.canvas()
        for i, pts in enumerate(shapes, start=1):
            self.polygon(draw, pts, fill=i)
        return to_array(img)


def binomial_blur(a: np.ndarray, passes: int = 1) -> np.ndarray:
    """Separable [1,2,1]/4 filter, `passes` times (sigma = 0.71 * sqrt(passes) px); edges replicated.

    Rows, then columns. Each step is one whole-buffer numpy operation: the row pass runs on the flattened image,
    and the values it computes across a row boundary land in the first and last columns, which the edge rule then
    overwrites. Every pixel gets the same float32 operations, in the same order, as a per-row filter."""
    a = a.astype(np.float32)  # always a copy: callers may pass views of PIL buffers
    h, w = a.shape
    tmp = np.empty_like(a)
    flat_a, flat_t = a.reshape(-1), tmp.reshape(-1)
    twice = np.empty(max(a.size - 2, 0), np.float32)
    inner = twice[: max(h - 2, 0) * w]
    for _ in range(passes):
        np.add(flat_a[:-2], flat_a[2:], out=flat_t[1:-1])  # along rows
        np.multiply(flat_a[1:-1], 2, out=twice)
        flat_t[1:-1] += twice
        tmp[:, 0] = 3 * a[:, 0] + a[:, 1]
        tmp[:, -1] = 3 * a[:, -1] + a[:, -2]
        tmp *= 0.25
        np.add(tmp[:-2], tmp[2:], out=a[1:-1])  # along columns
        np.multiply(tmp[1:-1].reshape(-1), 2, out=inner)
        a[1:-1] += inner.reshape(h - 2, w)
        a[0] = 3 * tmp[0] + tmp[1]
        a[-1] = 3 * tmp[-1] + tmp[-2]
        a *= 0.25
    return a


def soft_blur(layer, sigma_px: float) -> np.ndarray:
    """Large-radius blur of a bool/uint8 layer, done at 1/4 resolution; float32 in [0, 1]."""
    img = (
        layer
        if isinstance(layer, Image.Image)
        else Image.fromarray(layer.astype(np.uint8) * 255 if layer.dtype == bool else layer)
    )
    n = img.size[0]
    f = 4 if n >= 128 else 2
    small = img.reduce(f).filter(ImageFilter.GaussianBlur(max(0.5, sigma_px / f)))
    return to_array(small.resize((n, n), Image.BILINEAR)).astype(np.float32) * (1.0 / 255.0)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: random cells upsampled bicubically (cheap stand-in for a GRF)."""
    small = rng.standard_normal((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), dtype=np.float32)
