"""A contact sheet PNG: films, the same films with anatomy-mask and finding overlays, labels and reports.

For people to look at: does it resemble a frontal chest radiograph, do the masks sit on the anatomy, do the
reports and labels match what is drawn?
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write
from ..outputs import OutputError, add_output_file_option, check_output_file
from .generator import generate_study

# overlay colours per structure group (RGB); later groups are painted over earlier ones
GROUPS = [
    ("ribs", lambda n: " rib " in n, (230, 200, 60)),
    ("lungs", lambda n: n in ("right lung", "left lung"), (60, 140, 255)),
    ("heart", lambda n: n == "heart", (255, 80, 80)),
    ("mediastinum", lambda n: n == "upper mediastinum", (255, 150, 40)),
    ("trachea", lambda n: n == "trachea", (40, 220, 220)),
    ("spine", lambda n: n == "spine", (170, 90, 255)),
    ("clavicles", lambda n: n.startswith("clavicle"), (120, 255, 120)),
    ("diaphragm", lambda n: n.endswith("hemidiaphragm"), (255, 90, 220)),
]


def overlay(image: np.ndarray, names, masks: np.ndarray, findings: list | None = None) -> Image.Image:
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    for _, pick, colour in GROUPS:
        sel = np.zeros(image.shape, bool)
        for n, m in zip(names, masks, strict=True):
            if pick(n):
                sel |= m
        rgb[sel] = 0.55 * rgb[sel] + 0.45 * np.array(colour, np.float32)
    for f in findings or []:  # finding pixels in solid red, so small lesions stay visible
        if f.mask is not None:
            rgb[f.mask] = 0.3 * rgb[f.mask] + 0.7 * np.array([255, 0, 0], np.float32)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _caption(study, width_px: int, font) -> str:
    """Id, CTR and labels (positive, uncertain), then the report, wrapped to the tile's width."""
    pos = [o for o, v in study.labels.items() if v == 1]
    unc = [o for o, v in study.labels.items() if v == -1]
    head = f"{study.id}  CTR {study.measurements['ctr']:.2f}  | 1: {', '.join(pos) or '-'}"
    head += f" | -1: {', '.join(unc)}" if unc else ""
    width = int(width_px / (font.size * 0.5))
    return textwrap.fill(head, width=width) + "\n" + textwrap.fill(study.report, width=width)


def contact_sheet(seed: int = 0, start: int = 0, n: int = 8, size: int = 256, cols: int = 4) -> Image.Image:
    """Film and overlay side by side for `n` studies, each row as tall as its longest caption needs."""
    tile_w, font = 2 * size, _font(max(9, size // 22))
    studies = [generate_study(seed, start + k, size) for k in range(n)]
    captions = [_caption(st, tile_w - 8, font) for st in studies]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heights = [measure.multiline_textbbox((0, 0), c, font=font, spacing=2)[3] + 10 for c in captions]
    rows = (n + cols - 1) // cols
    row_heights = [size + max(heights[r * cols : (r + 1) * cols]) for r in range(rows)]
    tops = [sum(row_heights[:r]) for r in range(rows)]
    sheet = Image.new("RGB", (cols * tile_w, sum(row_heights)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (st, caption) in enumerate(zip(studies, captions)):
        x, y = (k % cols) * tile_w, tops[k // cols]
        sheet.paste(Image.fromarray(st.image).convert("RGB"), (x, y))
        sheet.paste(overlay(st.image, st.mask_names, st.masks, st.findings), (x + size, y))
        draw.multiline_text((x + 4, y + size + 4), caption, fill=(0, 0, 0), font=font, spacing=2)
    return sheet


def save_contact_sheet(path: str | Path, **kwargs) -> Path:
    import io

    buf = io.BytesIO()
    contact_sheet(**kwargs).save(buf, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


def main(argv: list[str] | None = None) -> int:
    """`asarg contact-sheet`."""
    p = argparse.ArgumentParser(
        prog="asarg contact-sheet",
        description="Write a PNG of SynthCXR films with anatomy/finding overlays, labels and reports.",
    )
    add_output_file_option(p, "the PNG to write (default %(default)s)", aliases=("--out",))
    p.set_defaults(output="synthcxr_contact_sheet.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first study index")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cols", type=int, default=4)
    args = p.parse_args(argv)
    try:
        check_output_file(args.output, overwrite=args.overwrite, what="--output")
    except OutputError as error:
        print(f"asarg contact-sheet: {error}", file=sys.stderr)
        return 2
    path = save_contact_sheet(args.output, seed=args.seed, start=args.start, n=args.n, size=args.size, cols=args.cols)
    print(f"wrote {path}")
    return 0
