"""What the ASaRG Space computes, apart from the model: input checks, the examples, the film overlay, the report's
highlighting, sentence selection and the counterfactual diff.

No gradio and no model in this file: every function takes and returns plain Python / numpy / PIL values, so each is
unit-tested directly (tests/spaces_demo/test_app.py) and app.py stays a thin layout. The model-side calls live in
engine.py.

The grounded report these functions read is `asarg.evaluation.grounding.ground_report`'s dict:
`{"report", "image_size": [W, H], "sentences": [{"text", "span": [start, end], "labels": {observation: "positive" |
"uncertain" | "negative"}, "structures": [{"name", "score", "box": [x0, y0, x1, y1] | None}]}]}`.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from asarg.processing.image_io import load_image
from modeling_asarg.processing_asarg import min_max_to_uint8

MAX_UPLOAD_MB = 25  # a 16-bit 3000x3000 DICOM is about 18 MB; anything much larger is not a single radiograph
# The film is shown, and handed to the model, at most this many pixels on its longer side. The model's processor
# resizes to its own input sizes (the vision tower and the CXAS segmenter read at most 512 px), so the model sees what
# it would see from the full film, up to resampling, and the K per-structure maps of one request stay small.
WORK_SIDE = 512
MASK_THRESHOLD = 0.5

# HighlightedText categories of a sentence: its strongest CheXpert mention wins (positive > uncertain > negative).
CATEGORIES = ("positive", "uncertain", "negative")
UNLABELLED = "no CheXpert finding"
LABEL_COLORS = {"positive": "#e4572e", "uncertain": "#f3a712", "negative": "#29bf12", UNLABELLED: "#a0a0a0"}
DIFF_COLORS = {"added": "#29bf12", "removed": "#e4572e"}
# Distinct, colour-blind-friendlier colours for the structures (Okabe-Ito, then Tableau 10); cycled if needed.
PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#4e79a7", "#f28e2b", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
)  # fmt: skip


class InputError(ValueError):
    """A problem with what the user gave; the message is shown to them as it is."""


# ---- input -----------------------------------------------------------------------------------------------------------


def check_upload(path: str | Path | None, max_mb: float = MAX_UPLOAD_MB) -> Image.Image:
    """The uploaded film as an 8-bit image of at most WORK_SIDE px, or InputError saying what is wrong with it.

    Gradio's own `max_file_size` refuses large uploads before they reach the app; the size is checked here as well
    so that a direct call (tests, the named API behind a proxy) gets the same readable answer.
    """
    if path is None or str(path) == "":
        raise InputError("No image given: upload a PNG, JPEG or DICOM chest X-ray, or pick an example.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: the upload did not arrive (no such file); please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name} is empty (0 bytes): upload a PNG, JPEG or DICOM chest X-ray.")
    if size > max_mb * 1024 * 1024:
        raise InputError(f"{path.name} is too large ({size / 2**20:.1f} MB; the limit is {max_mb:g} MB).")
    try:
        image = load_image(path)
    except ValueError as error:
        # load_image names the file by its full server path (a gradio temp folder): show the user their file name.
        raise InputError(str(error).replace(str(path), path.name)) from error
    return work_image(image)


def work_image(image: Image.Image, side: int = WORK_SIDE) -> Image.Image:
    """8-bit grey (or RGB) copy of `image`, its longer side at most `side` px (aspect ratio kept)."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        # Deep PNG / TIFF: stretch to 8 bit the way the processor would (per image, min-max), so the film shown is
        # the film the model reads.
        image = Image.fromarray(min_max_to_uint8(np.asarray(image, dtype=np.float64)), mode="L")
    elif image.mode not in {"L", "RGB"}:
        image = image.convert("RGB")
    if max(image.size) > side:
        scale = side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image.copy()


# ---- examples --------------------------------------------------------------------------------------------------------


def write_examples(folder: str | Path, n: int = 3, seed: int = 2024, size: int = 512) -> list[tuple[str, str]]:
    """[(file, label)]: `n` SynthCXR studies generated into `folder`, then the real radiograph RG1_UNCR.dcm if the
    `pydicom-data` package is installed. Files are copied under `folder` because gradio serves examples only from
    the working directory or the temp folder, and site-packages is neither on a Space."""
    from asarg.processing.synthcxr.dataset import SPLITS, read_manifest, write_dataset

    folder = Path(folder)
    synth = folder / "synthcxr"
    write_dataset(synth, n, seed=seed, size=size)
    records = sorted((r for split in SPLITS for r in read_manifest(synth, split)), key=lambda r: r["index"])
    examples = [
        (str(synth / r["image"]), f"SynthCXR {r['id']}: {_first_sentence(r['findings_text'])}") for r in records
    ]
    dicom = real_radiograph()
    if dicom is not None:
        target = folder / dicom.name
        shutil.copyfile(dicom, target)
        examples.append((str(target), "RG1_UNCR.dcm: a real PA chest film (DICOM, pydicom-data)"))
    return examples


def real_radiograph() -> Path | None:
    """The real chest film of the `pydicom-data` package, or None when it is not installed."""
    try:
        import pydicom.data
    except ImportError:
        return None
    try:
        # download=False: pydicom would otherwise try to fetch a missing file from GitHub (no network on a Space).
        found = pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False)
    except Exception:  # pydicom 2.x looks the file up through pkg_resources, gone from new setuptools
        found = None
    if found is None:
        try:
            import data_store  # the module pydicom-data installs

            found = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
        except ImportError:
            return None
    return Path(found) if Path(found).is_file() else None


def _first_sentence(text: str, limit: int = 60) -> str:
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


# ---- the film --------------------------------------------------------------------------------------------------------


def structure_masks(
    probabilities: np.ndarray, groups: Mapping[str, Sequence[int]], threshold: float = MASK_THRESHOLD
) -> dict[str, np.ndarray]:
    """{structure: boolean (H, W) mask} from the segmenter's (K, H, W) probabilities. A group's mask is the union of
    its members' masks; structures the segmenter did not find anywhere are left out."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        raise ValueError(f"Expected (K, H, W) probabilities, got shape {probabilities.shape}.")
    out = {}
    for name, members in groups.items():
        mask = (probabilities[list(members)] >= threshold).any(axis=0)
        if mask.any():
            out[name] = mask
    return out


def resize_masks(masks: Mapping[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Masks resized (nearest neighbour) to the film's (W, H), for a segmenter that answers at another size."""
    out = {}
    for name, mask in masks.items():
        if mask.shape[::-1] != tuple(size):
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
        out[name] = mask
    return out


def color_map(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def outlined(mask: np.ndarray, fill: float = 0.2, edge: int = 2) -> np.ndarray:
    """A boolean mask as gr.AnnotatedImage draws it best: its outline (`edge` px) opaque, its inside faint.

    AnnotatedImage uses the mask's values as the overlay's alpha. Solid masks of overlapping structures (lungs, ribs,
    heart, mediastinum) would stack into an opaque sheet that hides the film; outlines keep the film readable.
    """
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(edge):  # erosion by a 3x3 cross; the film's border does not count as an edge
        inner[1:] &= inner[:-1].copy()
        inner[:-1] &= inner[1:].copy()
        inner[:, 1:] &= inner[:, :-1].copy()
        inner[:, :-1] &= inner[:, 1:].copy()
    out = mask.astype(np.float32) * fill
    out[mask & ~inner] = 1.0
    return out


def overlay(image: Image.Image, masks: Mapping[str, np.ndarray]) -> tuple:
    """gr.AnnotatedImage value: the film and one (outlined mask, structure name) per structure found."""
    return image, [(outlined(mask), name) for name, mask in masks.items()]


# ---- the report ------------------------------------------------------------------------------------------------------


def sentence_category(labels: Mapping[str, str]) -> str:
    """positive if any observation is positive, else uncertain, else negative; UNLABELLED without a mention."""
    values = set(labels.values())
    return next((c for c in CATEGORIES if c in values), UNLABELLED)


def highlight_report(grounded: Mapping) -> list[tuple[str, str | None]]:
    """gr.HighlightedText value: one segment per sentence, labelled by `sentence_category`.

    Segment i is sentence i (the whitespace after a sentence is kept in its segment, text before the first one in
    the first), so the index of a selected segment is the index of its sentence.
    """
    report, sentences = grounded["report"], grounded["sentences"]
    if not sentences:
        return [(report or "(The model wrote an empty report.)", None)]
    starts = [0] + [s["span"][0] for s in sentences[1:]] + [len(report)]
    return [
        (report[starts[i] : starts[i + 1]], sentence_category(s.get("labels", {}))) for i, s in enumerate(sentences)
    ]


def sentence_at(grounded: Mapping, index) -> dict | None:
    """The sentence a HighlightedText selection points at (its SelectData.index), or None."""
    if isinstance(index, (list, tuple)):  # some components give [row, col]; HighlightedText gives an int
        index = index[0] if index else None
    sentences = grounded.get("sentences", []) if grounded else []
    if not isinstance(index, int) or not 0 <= index < len(sentences):
        return None
    return sentences[index]


def sentence_annotations(
    sentence: Mapping, masks: Mapping[str, np.ndarray], image_size: Sequence[int], film_size: Sequence[int]
) -> list[tuple]:
    """(mask or box, "name  score") for each structure that supports `sentence`, for gr.AnnotatedImage.

    A structure is drawn with its segmentation mask where the film has one, else with its box (scaled from the
    grounded image's `image_size` to the film's `film_size`, both (W, H)); one with neither is skipped.
    """
    sx, sy = film_size[0] / image_size[0], film_size[1] / image_size[1]
    out = []
    for item in sentence.get("structures", []):
        label = f"{item['name']}  {_score(sentence, item['score'])}"
        if item["name"] in masks:
            out.append((outlined(masks[item["name"]], fill=0.35), label))
        elif item.get("box"):
            x0, y0, x1, y1 = item["box"]
            box = (
                int(x0 * sx),
                int(y0 * sy),
                max(int(x1 * sx), int(x0 * sx) + 1),
                max(int(y1 * sy), int(y0 * sy) + 1),
            )
            out.append((box, label))
    return out


def sentence_details(sentence: Mapping | None) -> str:
    """Markdown under the report: the selected sentence, its CheXpert labels and its structures with scores."""
    if sentence is None:
        return "Click a sentence of the report to see the anatomy it rests on."
    labels = sentence.get("labels", {})
    lines = [f"**{sentence['text']}**", ""]
    lines.append(", ".join(f"{obs}: *{value}*" for obs, value in labels.items()) or "*No CheXpert observation.*")
    structures = sentence.get("structures", [])
    if sentence.get("method") == "finding":
        if not sentence.get("finding"):
            return "\n".join([*lines, "", "*This sentence asserts no finding: there is nothing to trace.*"])
        lines += [
            "",
            f"The model reads **{sentence['finding']}** in this film at {sentence['confidence']:.0%} (50% = the "
            "threshold at which it writes the finding). Where its classifier looked for it:",
        ]
    if structures:
        lines += ["", "| structure | score |", "|---|---:|"]
        lines += [f"| {s['name']} | {_score(sentence, s['score'])} |" for s in structures]
        lines += ["", SCORE_MEANING[sentence.get("method", "maps")]]
    else:
        lines += ["", "*No structure supports this sentence.*"]
    return "\n".join(lines)


SCORE_MEANING = {
    "finding": "Score: the share of the classifier's attention that falls inside the structure.",
    "maps": "Score: how much less likely the model finds this sentence without the structure's map (nats).",
}


def _score(sentence: Mapping, score: float) -> str:
    return f"{score:.0%}" if sentence.get("method") == "finding" else f"{score:+.3f}"


# ---- the counterfactual ----------------------------------------------------------------------------------------------


def counterfactual_choices(structures: Sequence[str], groups: Mapping[str, Sequence[int]]) -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs; a group's label says how many maps it removes at once."""

    def label(name: str) -> str:
        n = len(groups[name]) if name in groups else 0
        return f"{name} (group of {n} map{'s' if n > 1 else ''})" if name in groups else name

    return [(label(name), name) for name in structures]


def check_choice(choice: str | None, structures: Sequence[str]) -> str:
    if not choice:
        raise InputError("Pick a structure to remove first.")
    if choice not in structures:
        raise InputError(f"{choice!r} is not a structure of this model; pick one from the list.")
    return choice


def word_diff(before: str, after: str) -> list[tuple[str, str | None]]:
    """gr.HighlightedText value of a word-level diff: (text, "removed" | "added" | None)."""
    a, b = re.findall(r"\S+|\s+", before), re.findall(r"\S+|\s+", after)
    out: list[tuple[str, str | None]] = []
    for op, i0, i1, j0, j1 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("".join(a[i0:i1]), None))
            continue
        if i1 > i0:
            out.append(("".join(a[i0:i1]), "removed"))
        if j1 > j0:
            out.append(("".join(b[j0:j1]), "added"))
    return out or [("(both reports are empty)", None)]


def diff_summary(before: str, after: str, dropped: str) -> str:
    if before == after:
        return f"Without **{dropped}** the model writes the same report, word for word."
    ratio = difflib.SequenceMatcher(None, before.split(), after.split(), autojunk=False).ratio()
    return f"Without **{dropped}** the report changes ({100 * (1 - ratio):.0f}% of its words differ)."


def grounded_json(grounded: Mapping) -> str:
    return json.dumps(grounded, indent=1)


__all__ = [
    "InputError",
    "MAX_UPLOAD_MB",
    "check_choice",
    "check_upload",
    "counterfactual_choices",
    "highlight_report",
    "overlay",
    "sentence_annotations",
    "sentence_at",
    "sentence_details",
    "structure_masks",
    "word_diff",
    "write_examples",
]
