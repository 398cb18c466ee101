"""Which `checkpoint-N` folder a run can resume from.

The Trainer writes a checkpoint file by file (weights, optimizer, scheduler, RNG state, `trainer_state.json` last)
and none of them atomically, so a run killed while saving leaves a folder that looks like the newest checkpoint but
cannot be resumed. `transformers.trainer_utils.get_last_checkpoint` only sorts folder names; here a checkpoint counts
as *complete* when

* `trainer_state.json` parses and its `global_step` is the folder's N (it is written last, so a crash before the end
  leaves it missing, empty or cut off);
* the weights are there and whole: a known weights file (single or sharded safetensors / torch files, a PEFT adapter)
  or a DeepSpeed / FSDP state folder;
* unless `save_only_model`, the optimizer, scheduler and RNG state are there;
* every file of a self-checking format is whole: a `.safetensors` file is exactly as long as its header says, a
  torch `.pt` / `.pth` / `.bin` file (a zip archive) has its end-of-archive record, a `.json` file parses.

These checks read headers only (no tensor is loaded), so they cost milliseconds even for a 7B checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path

logger = logging.getLogger("asarg.sft")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
# DeepSpeed (global_stepN) and FSDP (pytorch_model_fsdp_0, optimizer_0) keep model and optimizer state in folders.
STATE_FOLDERS = re.compile(r"^(global_step\d+|pytorch_model_fsdp(_\d+)?|optimizer(_\d+)?)$")


def file_problem(path: Path) -> str | None:
    """What is wrong with one checkpoint file (None: whole, as far as its format can tell)."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty (0 bytes)"
    if path.suffix == ".safetensors":
        return _safetensors_problem(path, size)
    if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
        return f"{path.name} is cut off or not a torch file (no zip end-of-archive record)"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            return f"{path.name} does not parse ({e})"
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    with path.open("rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if length < 0 or 8 + length > size:
            return f"{path.name} is cut off inside its header"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return f"{path.name} has a corrupt header"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if 8 + length + max(ends, default=0) != size:
        return f"{path.name} is {size} bytes, its header says {8 + length + max(ends, default=0)} (cut off)"
    return None


def _weights_problem(folder: Path) -> str | None:
    names = [n for n in WEIGHT_FILES if (folder / n).exists()]
    if not names:
        if any(STATE_FOLDERS.match(p.name) and p.is_dir() for p in folder.iterdir()):
            return None
        return "no model weights (model.safetensors, adapter_model.safetensors, ...)"
    for name in names:
        problem = file_problem(folder / name)
        if problem is None and name.endswith(".index.json"):
            shards = set(json.loads((folder / name).read_text())["weight_map"].values())
            problem = next(filter(None, (file_problem(folder / s) for s in sorted(shards))), None)
        if problem:
            return problem
    return None


def _training_state_problem(folder: Path) -> str | None:
    """The optimizer, scheduler and RNG state a resume needs to continue exactly."""
    folders = any(STATE_FOLDERS.match(p.name) and p.is_dir() for p in folder.iterdir())
    if not folders and not any((folder / n).is_file() for n in ("optimizer.pt", "optimizer.bin")):
        return "no optimizer state (optimizer.pt)"
    if (folder / "optimizer.pt").is_file() and not (folder / "scheduler.pt").is_file():
        return "no scheduler state (scheduler.pt)"
    if not list(folder.glob("rng_state*.pth")):
        return "no RNG state (rng_state.pth): the resumed run would not continue the same random stream"
    return None


def has_complete_checkpoint(output_dir: str | os.PathLike) -> bool:
    """Whether a run in `output_dir` can be resumed: a kill during the first save leaves only an incomplete one, and
    then the run must start afresh instead of asking to resume."""
    return any(checkpoint_problem(path) is None for path in Path(output_dir).glob("checkpoint-*"))


def checkpoint_problem(folder: str | os.PathLike, save_only_model: bool = False) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is a complete checkpoint (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    state = folder / "trainer_state.json"
    problem = file_problem(state)
    if problem:
        return problem
    step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    named = CHECKPOINT.match(folder.name)
    if named and step != int(named.group(1)):
        return f"trainer_state.json says global_step {step}, the folder name says {named.group(1)}"
    problem = _weights_problem(folder) or (None if save_only_model else _training_state_problem(folder))
    if problem:
        return problem
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
    return next(filter(None, (file_problem(p) for p in files)), None)


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of a run, newest (largest N) first."""
    found = [p for p in Path(output_dir).iterdir() if CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True)


def latest_complete_checkpoint(output_dir: str | os.PathLike, save_only_model: bool = False) -> str:
    """The newest complete checkpoint in `output_dir`; each newer, broken one is named in a warning (it is left in
    place: the resumed run writes that step's checkpoint again when it gets there)."""
    found = checkpoints(output_dir) if Path(output_dir).is_dir() else []
    if not found:
        raise ValueError(f"resume_from_checkpoint=true but {output_dir} holds no checkpoint-* folder")
    broken = []
    for folder in found:
        problem = checkpoint_problem(folder, save_only_model)
        if problem is None:
            for name, why in broken:
                logger.warning(
                    "Skipping %s: it is not a complete checkpoint (%s; a run killed while saving it?). Resuming "
                    "from %s instead.",
                    name,
                    why,
                    folder,
                )
            return str(folder)
        broken.append((str(folder), problem))
    listing = "; ".join(f"{name}: {why}" for name, why in broken)
    raise ValueError(
        f"resume_from_checkpoint=true but no checkpoint in {output_dir} is complete ({listing}); start afresh "
        "(resume_from_checkpoint false) or pass a checkpoint folder you trust"
    )
