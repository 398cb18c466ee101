"""Write a SynthCXR dataset to disk (images, masks, JSONL manifests) and load it back as a DatasetDict.

Layout of DIR:
  dataset_info.json            version, seed, size, n, split counts, anatomy class names, label distribution
  train.jsonl / validation.jsonl / test.jsonl   one record per study (see README.md, "Manifest")
  images/<id>.png              8-bit grayscale film
  masks/<id>.npz               anatomy + finding masks (masks.py)
  .synthcxr-incomplete.json    present only while a generation is running (or after one was interrupted)
Split of study `index`: index % 10 in 0..7 -> train, 8 -> validation, 9 -> test. It depends on the index only, so
a larger generation with the same seed contains every study of a smaller one, in the same split.

Interrupted generations: `write_dataset` writes the in-progress marker and removes any old manifests and
dataset_info.json before the first study file, and writes the manifests, then dataset_info.json, then removes the
marker, last. So a folder is a complete dataset exactly when it has dataset_info.json and no marker, and
`load_synthcxr` / `read_manifest` refuse any other. Rerunning the same command into an interrupted folder finishes it
(the output is deterministic, so it is regenerated and comes out identical to an uninterrupted run); a rerun with
another seed, size or version, or a smaller n, is refused, since it would mix two datasets in one folder.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .findings import CHEXPERT
from .generator import ANATOMY_CLASSES, VERSION, Study, generate_study
from .masks import load_mask_file, pack

SPLITS = ("train", "validation", "test")


def split_of(index: int) -> str:
    r = index % 10
    return "train" if r < 8 else "validation" if r == 8 else "test"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + kind + data + struct.pack(">L", zlib.crc32(data, zlib.crc32(kind)))


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless 8-bit grayscale PNG of a uint8 (H, W) image, written directly (about 3x faster than Pillow's encoder,
    whose adaptive filter search dominated the write time, and a little smaller): every row uses the PNG "Up" filter
    (difference to the row above), then zlib Huffman-codes it (Z_HUFFMAN_ONLY: on noisy films string matching
    costs time and saves nothing). Deterministic: no timestamps or other metadata."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 2:
        raise ValueError(f"png_bytes needs a 2-D uint8 image, got shape {image.shape}")
    h, w = image.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type 2 (Up); the row above the first one is taken as zeros
    rows[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG specifies
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY)
    idat = comp.compress(rows) + comp.flush()
    header = struct.pack(">2L5B", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def record(study: Study) -> dict:
    return {
        "id": study.id,
        "index": study.index,
        "seed": study.seed,
        "version": study.version,
        "split": split_of(study.index),
        "image": f"images/{study.id}.png",
        "mask": f"masks/{study.id}.npz",
        "findings_text": study.report,
        "labels": study.labels,
        "findings": [f.to_json() for f in study.findings],
        "measurements": study.measurements,
        "distractors": study.distractors,
    }


def finding_masks(study: Study) -> np.ndarray:
    h, w = study.image.shape
    out = np.zeros((len(study.findings), h, w), bool)
    for i, f in enumerate(study.findings):
        if f.mask is not None:
            out[i] = f.mask
    return out


class BackgroundWriter:
    """Atomic file writes (`asarg.processing.atomic.atomic_write`, fsync included) on one background thread.

    The thread spends its time waiting for the disk in fsync, which needs no CPU and releases the GIL, so that wait
    overlaps the generation of the next studies even on one core. A failed write is raised by `write` (that call
    or a later one) or by `close`; at most `max_pending` writes are queued. The bytes written do not depend on the
    timing. `write_dataset` writes the manifests only after every study file is written."""

    def __init__(self, max_pending: int = 32):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="synthcxr-write")
        self._pending: deque = deque()
        self._max_pending = max_pending

    def write(self, path: Path, data: bytes) -> None:
        self._pending.append(self._pool.submit(atomic_write, path, data))
        while self._pending and (len(self._pending) > self._max_pending or self._pending[0].done()):
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for every queued write; raises the first failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_study(study: Study, out: Path, writer: BackgroundWriter | None = None) -> dict:
    """Write the study's PNG and mask .npz under `out` (now, or through `writer`) and return its manifest record."""
    write = atomic_write if writer is None else writer.write
    write(out / "images" / f"{study.id}.png", png_bytes(study.image))
    write(out / "masks" / f"{study.id}.npz", pack(study.mask_names, study.masks, finding_masks(study)))
    return record(study)


def _work(args) -> list[dict]:
    seed, indices, size, out = args
    with BackgroundWriter() as writer:  # every file of the chunk is written when this returns
        return [write_study(generate_study(seed, i, size), Path(out), writer) for i in indices]


def label_distribution(records: list[dict]) -> dict:
    """Per observation: counts of 1, 0, -1 and blank."""
    dist = {o: Counter() for o in CHEXPERT}
    for r in records:
        for o in CHEXPERT:
            v = r["labels"][o]
            dist[o]["blank" if v is None else str(v)] += 1
    return {o: {k: c[k] for k in ("1", "-1", "0", "blank")} for o, c in dist.items()}


MARKER = ".synthcxr-incomplete.json"
OUTPUTS = ("images", "masks", *(f"{s}.jsonl" for s in SPLITS), "dataset_info.json")


def existing_generation(out: Path) -> dict | None:
    """What `out` already holds: the parameters of a running/interrupted generation (the marker) or of a complete
    dataset (dataset_info.json); None when it holds neither."""
    for name in (MARKER, "dataset_info.json"):
        if (out / name).is_file():
            try:
                info = json.loads((out / name).read_text())
            except ValueError:
                info = None
            if isinstance(info, dict):
                return {k: info.get(k) for k in ("version", "seed", "size", "n")} | {"complete": name != MARKER}
            raise ValueError(f"{out / name} is not a JSON object; {out} is damaged: delete it or use a new folder")
    return None


def _claim(out: Path, params: dict) -> dict | None:
    """Mark `out` as being written (before any study file) and return what it held; refuse a folder whose files
    would mix with this generation's."""
    out.mkdir(parents=True, exist_ok=True)
    previous = existing_generation(out)
    if previous is None and any((out / name).exists() for name in OUTPUTS):
        raise ValueError(
            f"{out} has SynthCXR-like files (images/, masks/ or manifests) but no dataset_info.json and no "
            f"{MARKER}: it was not written by this `asarg synth` (or by an older one that was interrupted). "
            "Delete it or give a new --out folder"
        )
    same = previous is not None and all(previous[k] == params[k] for k in ("version", "seed", "size"))
    if previous is not None and not (same and isinstance(previous["n"], int) and params["n"] >= previous["n"]):
        held = ", ".join(f"{k}={previous[k]}" for k in ("version", "seed", "size", "n"))
        state = "a complete" if previous["complete"] else "an interrupted"
        raise ValueError(
            f"{out} holds {state} SynthCXR generation with {held}; writing "
            + ", ".join(f"{k}={params[k]}" for k in ("version", "seed", "size", "n"))
            + " into it would mix two datasets. Give a new --out folder or delete this one (the same seed and "
            "size with n at least as large is allowed: it finishes or extends the dataset)"
        )
    atomic_write(out / MARKER, json.dumps(params).encode())
    for name in ("dataset_info.json", *(f"{s}.jsonl" for s in SPLITS)):
        (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    return previous


def _generate(out: Path, n: int, seed: int, size: int, workers: int, progress: bool) -> list[dict]:
    chunks = [list(range(i, min(n, i + 200))) for i in range(0, n, 200)]
    jobs = [(seed, c, size, str(out)) for c in chunks]
    records: list[dict] = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            for part in ex.map(_work, jobs):
                records += part
                _progress(progress, len(records), n)
    else:
        for job in jobs:
            records += _work(job)
            _progress(progress, len(records), n)
    return records


def check_arguments(n: int, seed: int, size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"need n > 0 studies (got n={n!r})")
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise ValueError(f"need size >= 64 pixels (got size={size!r}): the anatomy is drawn at that resolution")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"need a seed >= 0 (got seed={seed!r}): numpy's SeedSequence takes no negative seed")


def write_dataset(
    out: str | os.PathLike, n: int, seed: int = 0, size: int = 256, workers: int = 1, progress: bool = False
) -> dict:
    """Generate studies 0..n-1 of `seed` into `out`; returns dataset_info. Deterministic for any `workers`. See the
    module docstring for what a rerun into an existing or interrupted folder does."""
    check_arguments(n, seed, size)
    out = Path(out)
    _claim(out, {"version": VERSION, "seed": seed, "size": size, "n": n})
    records = _generate(out, n, seed, size, workers, progress)
    by_split = {s: [r for r in records if r["split"] == s] for s in SPLITS}
    for s, recs in by_split.items():
        atomic_write(out / f"{s}.jsonl", "".join(json.dumps(r) + "\n" for r in recs).encode())
    info = {
        "version": VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "splits": {s: len(r) for s, r in by_split.items()},
        "anatomy_classes": list(ANATOMY_CLASSES),
        "label_distribution": label_distribution(records),
    }
    atomic_write(out / "dataset_info.json", json.dumps(info, indent=1).encode())
    (out / MARKER).unlink()  # last: from here on the folder is a complete dataset
    return info


def _progress(on: bool, done: int, n: int) -> None:
    if on:
        print(f"\r{done}/{n} studies", end="\n" if done >= n else "", flush=True)


# --------------------------------------------------------------------------- reading


def dataset_info(root: str | os.PathLike) -> dict:
    """dataset_info.json of a complete SynthCXR folder of this version; a clear error for anything else (no dataset,
    an interrupted or still running `asarg synth`, another version)."""
    root = Path(root)
    if (root / MARKER).exists():
        raise ValueError(
            f"{root} is an incomplete SynthCXR dataset: an `asarg synth` into it was interrupted (or is still "
            f"running; {MARKER} is there). Rerun the same `asarg synth --out {root} ...` command to finish it"
        )
    if not (root / "dataset_info.json").is_file():
        raise ValueError(
            f"{root} is not a SynthCXR directory: no dataset_info.json (generate one with `asarg synth --out {root}`)"
        )
    info = json.loads((root / "dataset_info.json").read_text())
    version = info.get("version") if isinstance(info, dict) else None
    if version != VERSION:
        raise ValueError(f"{root} holds {version!r}, this code reads {VERSION!r}; regenerate it with `asarg synth`")
    return info


def read_manifest(root: str | os.PathLike, split: str) -> list[dict]:
    """The records of one split of a complete SynthCXR folder (its manifest must hold as many as dataset_info says:
    a manifest cut short or edited is an error, not a smaller benchmark)."""
    info = dataset_info(root)
    path = Path(root) / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: {root} is not a complete SynthCXR directory (rerun `asarg synth`)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    expected = info.get("splits", {}).get(split)
    if expected is not None and len(records) != expected:
        raise ValueError(
            f"{path} has {len(records)} records, dataset_info.json says {expected}: the folder was changed after "
            "`asarg synth` wrote it; regenerate it"
        )
    return records


def load_masks(study: dict, root: str | os.PathLike | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, bool (K, H, W)) anatomy masks of a manifest record. `root` defaults to record['root'] if present."""
    base = Path(root if root is not None else study.get("root", "."))
    names, anatomy, _ = load_mask_file(base / study["mask"])
    return names, anatomy


def load_finding_masks(study: dict, root: str | os.PathLike | None = None) -> np.ndarray:
    """bool (F, H, W): one mask per entry of record['findings'] (for grounding evaluation, not a model input)."""
    base = Path(root if root is not None else study.get("root", "."))
    return load_mask_file(base / study["mask"])[2]


def _rows(root: Path, split: str, prompt: str, strict: bool, skips) -> list[dict]:
    """The TRL rows of one split; a study whose image is missing, empty or unreadable (deleted or damaged after
    generation) is skipped and counted, or with `strict` an error naming the file."""
    from ..loaders.common import image_problem, row

    rows = []
    for r in read_manifest(root, split):
        problem = image_problem(root / r["image"])
        if problem:
            if strict:
                raise ValueError(f"{root}: study {r['id']}: {problem}: {root / r['image']}; regenerate the dataset")
            skips.skip(problem)
            continue
        extra = {"mask": str(root / r["mask"]), "findings_json": json.dumps(r["findings"])}
        rows.append(row(r["id"], [str(root / r["image"])], r["findings_text"], prompt, r["labels"], **extra))
    return rows


def load_synthcxr(root: str | os.PathLike, prompt: str | None = None, splits=SPLITS, strict: bool = False):
    """DatasetDict (train/validation/test) in TRL conversational format: `images` + `messages`, plus `id`,
    `report`, `labels` (14 CheXpert, 1/0/-1/None), `mask` (path of the .npz) and `findings_json`. Only a complete
    dataset of this version loads (see `dataset_info`); every image is checked first (`_rows`)."""
    import datasets

    from ..loaders.common import DEFAULT_PROMPT, SkipCounter, to_datasets

    root = Path(root).resolve()
    dataset_info(root)
    skips = SkipCounter(str(root))
    rows = {s: _rows(root, s, prompt or DEFAULT_PROMPT, strict, skips) for s in splits}
    skips.finish(sum(len(r) for r in rows.values()))
    extra = {"mask": datasets.Value("string"), "findings_json": datasets.Value("string")}
    return to_datasets(rows, extra)
