"""Checkpoint integrity: sha256 manifests for model folders, and the one loader our tools call.

safetensors carries no checksum, so flipped bytes inside a tensor load silently. `write_checksums(folder)` records
the sha256 of every weight, config, tokenizer, template and code file in `checksums.sha256` (the format of
`sha256sum`, so `sha256sum -c checksums.sha256` checks a folder too); `verify_checksums(folder)` hashes them again
and raises `CheckpointError` naming the damaged, missing or changed file.

`load_model(folder_or_hub_id)` / `open_checkpoint(...)` are what `asarg generate`, the Space and the training recipe
load a model with: they verify the manifest when the folder has one, then read the header of every
`*.safetensors` file before transformers does, so an empty, truncated or header-corrupted file, or a git-LFS pointer
left by a clone without git-lfs, is an error that names the file and its likely cause instead of safetensors'
"incomplete metadata" / "header too small".

The manifest is ours, not a Hub file the model needs: `modeling_asarg` never reads it, and a folder without one
loads as before (only the header checks apply).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from pathlib import Path, PurePosixPath

from .atomic import atomic_write

logger = logging.getLogger(__name__)

MANIFEST = "checksums.sha256"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Everything else `from_pretrained` reads: configs, tokenizer files, chat templates and the remote code.
CONFIG_SUFFIXES = (".json", ".jinja", ".py", ".model", ".txt", ".tiktoken")
LFS_POINTER_PREFIX = b"version https://git-lfs"
# Inside a training run's output folder: Trainer checkpoints (each gets its own manifest) and tracker logs.
_RUN_SUBFOLDER = re.compile(r"^(checkpoint-\d+|runs)$")
_HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.jinja", "*.model", "*.txt", "*.tiktoken", MANIFEST]


class CheckpointError(ValueError):
    """A checkpoint file is damaged, incomplete, missing or not what it claims to be; the message names it."""


# ---- checksum manifests ----------------------------------------------------------------------------------------------


def covered_files(folder: str | os.PathLike) -> list[str]:
    """The files a manifest covers, as POSIX paths relative to `folder`: weights and everything `from_pretrained`
    reads; hidden paths (`.git`, `.cache`) and documentation are left out."""
    root = Path(folder)
    names = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file() or relative.name == MANIFEST:
            continue
        if any(_RUN_SUBFOLDER.match(part) for part in relative.parts[:-1]):  # a checkpoint has its own manifest
            continue
        if path.suffix in WEIGHT_SUFFIXES + CONFIG_SUFFIXES:
            names.append(relative.as_posix())
    return names


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_checksums(folder: str | os.PathLike) -> Path:
    """Write `folder/checksums.sha256` (atomically) for every covered file; returns its path. Run it after the last
    write to the folder (`save_pretrained` of model and processor), before uploading or sharing it."""
    root = Path(folder)
    names = covered_files(root)
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in names):
        raise CheckpointError(f"{root} holds no weight file ({', '.join(WEIGHT_SUFFIXES)}); nothing to checksum.")
    lines = [f"{file_sha256(root / name)}  {name}\n" for name in names]
    atomic_write(root / MANIFEST, "".join(lines).encode())
    return root / MANIFEST


def read_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """The manifest as {relative path: sha256}; a malformed line raises `CheckpointError` naming it."""
    path = Path(folder) / MANIFEST
    entries = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, _, name = line.partition("  ")
        name = name.removeprefix("*")  # sha256sum's binary-mode marker
        relative = PurePosixPath(name)
        valid = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) and name
        if not valid or relative.is_absolute() or ".." in relative.parts:
            raise CheckpointError(
                f"{path}, line {number}, is not '<sha256>  <relative path>': {line[:100]!r}. Write the manifest "
                "again with asarg.processing.checkpoints.write_checksums."
            )
        entries[name] = digest
    return entries


def verify_checksums(folder: str | os.PathLike) -> list[str]:
    """Hash every file the manifest lists and compare; returns the verified names. Raises `CheckpointError` naming
    the first missing or damaged file. A covered file the manifest does not list is logged as a warning."""
    root = Path(folder)
    if not (root / MANIFEST).is_file():
        raise CheckpointError(f"{root} has no {MANIFEST}; write one with write_checksums({str(root)!r}).")
    expected = read_checksums(root)
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            raise CheckpointError(
                f"{path} is listed in {MANIFEST} but missing: the download or copy is incomplete; fetch it again."
            )
        actual = file_sha256(path)
        if actual != digest:
            raise CheckpointError(
                f"{path} is damaged: its sha256 is {actual[:16]}... but {MANIFEST} records {digest[:16]}... . The "
                "file changed after the checksums were written (a bad download, copy or disk): download it again. "
                "If you changed it on purpose, write the checksums again (write_checksums)."
            )
    unlisted = sorted(set(covered_files(root)) - set(expected))
    if unlisted:
        logger.warning("%s: %s not covered by %s (added after it was written?).", root, ", ".join(unlisted), MANIFEST)
    return list(expected)


# ---- safetensors files that transformers cannot read ---------------------------------------------------------------


def check_safetensors(path: str | os.PathLike) -> None:
    """Read the header of one `.safetensors` file; `CheckpointError` says what is wrong and what to do."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(64)
        if size == 0:
            raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy. Download it again.")
        if start.startswith(LFS_POINTER_PREFIX):
            raise CheckpointError(
                f"{path} is a git-LFS pointer ({size} bytes), not the weights: the repository was cloned without "
                "git-lfs. Run `git lfs install && git lfs pull` in the clone, or download it with "
                "`huggingface_hub.snapshot_download`."
            )
        if size < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short for a safetensors file: a partial download.")
        (header_size,) = struct.unpack("<Q", start[:8])
        if header_size > size - 8:
            raise CheckpointError(
                f"{path} is truncated or its header is corrupted: the header claims {header_size} bytes but the file "
                f"has {size}. Most likely a partial download or copy; download it again."
            )
        handle.seek(8)
        header = _parse_header(path, handle.read(header_size))
    _check_data_size(path, header, size - 8 - header_size)


def _parse_header(path: Path, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"{path} has a corrupted header (not the JSON of a safetensors file: {error}); download it again."
        ) from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted header (JSON {type(header).__name__}, not an object).")
    return header


def _check_data_size(path: Path, header: dict, data_size: int) -> None:
    try:
        end = max((int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise CheckpointError(f"{path} has a corrupted header (a tensor entry without data_offsets).") from error
    if end > data_size:
        raise CheckpointError(
            f"{path} is truncated: its tensors need {end} bytes of data but the file holds {data_size}. A partial "
            "download or copy; download it again."
        )


# ---- loading ---------------------------------------------------------------------------------------------------------


def check_checkpoint(folder: str | os.PathLike, verify: bool | None = None) -> None:
    """Everything `load_model` checks before reading: the manifest (`verify`: None = when there is one, True =
    required, False = skip hashing), then the header of every `.safetensors` file."""
    root = Path(folder)
    if verify or (verify is None and (root / MANIFEST).is_file()):
        verify_checksums(root)
    for name in covered_files(root):
        if name.endswith(".safetensors"):
            check_safetensors(root / name)


def local_folder(source: str | os.PathLike, revision: str | None = None) -> Path:
    """`source` itself when it is a folder, else the local snapshot of that Hub repository (downloaded, or taken
    from the Hugging Face cache when offline)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    # A Hub id is `name` or `owner/name`; anything else that is not a folder here is a path that does not exist.
    if path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        what = "is a file, not a checkpoint folder" if path.exists() else "does not exist"
        raise CheckpointError(f"{text} {what}: give a checkpoint folder (config.json, model.safetensors) or a Hub id.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=_HUB_FILE_PATTERNS))
    except (HFValidationError, OSError) as error:  # offline, no such repository, not an id
        raise CheckpointError(
            f"{text} is not a folder here, and the Hub could not supply it as a repository ({error}). Check the "
            "path, or the repository id and your connection (offline, a Hub model must be in the local cache)."
        ) from error


def foreign_code(folder: str | os.PathLike) -> list[str]:
    """The `.py` files of a checkpoint folder that are not byte-equal to the installed `modeling_asarg`'s Hub files:
    code that `trust_remote_code=True` would run and that this installation did not bring."""
    import modeling_asarg

    installed = Path(modeling_asarg.__file__).parent
    return [
        path.name
        for path in sorted(Path(folder).glob("*.py"))
        if not (installed / path.name).is_file() or (installed / path.name).read_bytes() != path.read_bytes()
    ]


def check_code(folder: str | os.PathLike, trust_remote_code: bool = False) -> bool:
    """The `trust_remote_code` to load `folder` with; the folder's own code runs only when the caller asked for it.

    * Code files equal to the installed ASaRG files, or none: the installed classes load it, nothing of the folder's
      runs (False).
    * An ASaRG checkpoint (`model_type` "asarg") whose code differs (saved by another asarg version, or edited):
      without consent the installed classes load it and the folder's code is ignored, with a warning naming the files
      (False); with `trust_remote_code=True` the folder's own code runs (True).
    * Any other model type with code of its own: `CheckpointError` naming the files, unless `trust_remote_code=True`.
    """
    own = foreign_code(folder)
    if not own:
        return False
    if trust_remote_code:
        return True
    if _model_type(folder) == "asarg":
        logger.warning(
            "%s ships model code (%s) that differs from the installed asarg's (another asarg version, or edited): "
            "it is not run; the installed asarg classes load the checkpoint. Pass --trust-remote-code "
            "(trust_remote_code=True) to run the folder's own code instead.",
            folder,
            ", ".join(own),
        )
        return False
    raise CheckpointError(
        f"{folder} is not an ASaRG checkpoint and ships its own model code ({', '.join(own)}); loading it would run "
        "that code. Load it only if you trust its author: pass --trust-remote-code (trust_remote_code=True in Python; "
        "ASARG_TRUST_REMOTE_CODE=1 for the Space)."
    )


def _model_type(folder) -> str | None:
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def load_model(
    source, model_class=None, *, verify: bool | None = None, trust_remote_code: bool = False, **from_pretrained_kwargs
):
    """A model from a checkpoint folder or a Hub id, checked first (`check_checkpoint`, `check_code`). `model_class`
    defaults to `AsargForConditionalGeneration` (e.g. `transformers.AutoModelForImageTextToText` for any model type);
    the kwargs go to its `from_pretrained` (`dtype`, `revision`, `attn_implementation`, ...). Code shipped in the
    folder runs only with `trust_remote_code=True`, and only when it differs from the installed ASaRG's."""
    from safetensors import SafetensorError

    if model_class is None:
        from modeling_asarg import AsargForConditionalGeneration as model_class
    folder = local_folder(source, from_pretrained_kwargs.pop("revision", None))
    check_checkpoint(folder, verify)
    remote = check_code(folder, trust_remote_code)
    try:
        return model_class.from_pretrained(folder, trust_remote_code=remote, **from_pretrained_kwargs)
    except SafetensorError as error:  # a fault the header checks do not see: still name the folder
        raise CheckpointError(
            f"A safetensors file in {folder} cannot be read ({error}): most likely a partial download or a damaged "
            "file; download the checkpoint again."
        ) from error


def open_checkpoint(
    source,
    model_class=None,
    processor_class=None,
    *,
    verify: bool | None = None,
    trust_remote_code: bool = False,
    **kwargs,
):
    """(model, processor) of a checkpoint folder or Hub id, checked as in `load_model`. `processor_class` defaults
    to `AsargProcessor` (e.g. `transformers.AutoProcessor`)."""
    from modeling_asarg import AsargProcessor

    folder = local_folder(source, kwargs.pop("revision", None))
    model = load_model(folder, model_class, verify=verify, trust_remote_code=trust_remote_code, **kwargs)
    remote = check_code(folder, trust_remote_code)
    return model, (processor_class or AsargProcessor).from_pretrained(folder, trust_remote_code=remote)


__all__ = [
    "MANIFEST",
    "CheckpointError",
    "check_checkpoint",
    "check_code",
    "check_safetensors",
    "covered_files",
    "foreign_code",
    "load_model",
    "open_checkpoint",
    "read_checksums",
    "verify_checksums",
    "write_checksums",
]
