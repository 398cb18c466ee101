"""Where a command writes: every output path is resolved and checked before any work, and folders are written through
a staging folder the command owns, then moved into place.

The rules (DESIGN §9, "outputs never destroy inputs or files the command did not write"):

* an output is never one of the command's inputs, never inside an input folder, and never a folder that holds an
  input, the working directory or the home folder (`--out ..` is refused);
* an existing output file is replaced only with `overwrite`;
* an existing, non-empty output folder is reused only when this command wrote it (its `.asarg-output.json` marker
  names the command), else it is refused unless `overwrite`.

`check_output_file` / `check_output_dir` raise `OutputError` (a `ValueError`) naming the path and what to do;
`staged_dir` and `staged_file` write the result next to its target and move it into place only when the work
succeeded, so a crash leaves the old output (or nothing) and never a half-written one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import atomic_write

MARKER = ".asarg-output.json"
_SHOWN = 5  # foreign file names shown in an error


class OutputError(ValueError):
    """An output path the command refuses to write; the message names it and says what to do."""


def _resolve(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_against_inputs(out: Path, inputs: Iterable, what: str) -> None:
    """`out` is none of the inputs, not inside an input folder and holds no input, the cwd or the home folder."""
    for given in inputs:
        if given is None:
            continue
        source = _resolve(given)
        if out == source:
            raise OutputError(f"{what} {out} is also an input of this command; writing it would destroy the input.")
        if source.is_dir() and _inside(out, source):
            raise OutputError(f"{what} {out} is inside the input folder {source}; write it somewhere else.")
        if _inside(source, out):
            raise OutputError(f"{what} {out} holds the input {source}; writing there could destroy it.")
    for special, name in ((Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "your home")):
        if _inside(special, out):
            raise OutputError(f"{what} {out} holds {name} ({special}); give a folder of its own.")


def check_output_file(path, inputs: Iterable = (), *, overwrite: bool = False, what: str = "output") -> Path:
    """The resolved output file; `OutputError` when it is an input, a folder, in a missing folder, or an existing
    file (without `overwrite`)."""
    out = _resolve(path)
    _check_against_inputs(out, inputs, what)
    if out.is_dir():
        raise OutputError(f"{what} {out} is a folder; give a file name.")
    if not out.parent.is_dir():
        raise OutputError(f"{what} {out}: its folder {out.parent} does not exist; create it first.")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"{what} {out}: its folder {out.parent} is not writable.")
    if out.exists() and not overwrite:
        raise OutputError(f"{what} {out} exists; choose a new name, or pass --overwrite to replace it.")
    return out


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker a command left in a folder it wrote (None: no marker, or not one of ours)."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def write_marker(folder: str | os.PathLike, command: str, **identity) -> None:
    """Mark `folder` as written by `command` (with what identifies the run, e.g. its data and base model)."""
    atomic_write(Path(folder) / MARKER, json.dumps({"command": command, **identity}, indent=1).encode())


def check_output_dir(
    path,
    inputs: Iterable = (),
    *,
    command: str,
    overwrite: bool = False,
    owned: Iterable[str] = (),
    what: str = "--out",
) -> Path:
    """The resolved output folder. An existing non-empty folder must be this command's (its marker, or one of the
    `owned` files that only this command writes), else `OutputError` unless `overwrite`."""
    out = _resolve(path)
    _check_against_inputs(out, inputs, what)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {out} is a file; give a folder.")
    if not out.is_dir() or overwrite:
        return out
    held = sorted(p.name for p in out.iterdir())
    marker = read_marker(out)
    ours = (marker is not None and marker["command"] == command) or any((out / name).exists() for name in owned)
    if held and not ours:
        shown = ", ".join(held[:_SHOWN]) + (f" and {len(held) - _SHOWN} more" if len(held) > _SHOWN else "")
        other = f", but by asarg {marker['command']}" if marker else ""
        raise OutputError(
            f"{what} {out} is not empty and was not built by asarg {command}{other} ({shown}). Give a new or empty "
            "folder, or pass --overwrite to replace what is there."
        )
    return out


def claim_run_dir(
    path, inputs: Iterable = (), *, command: str, identity: dict, overwrite: bool = False, owned: Iterable[str] = ()
) -> Path:
    """Check a resumable run folder (`check_output_dir`) and mark it as this run's. A folder this command wrote for
    another run (a different `identity`: data, base model, settings) is refused, naming both, unless `overwrite`
    (then the run starts afresh in it). Returns the resolved folder, created."""
    out = check_output_dir(path, inputs, command=command, overwrite=overwrite, owned=owned)
    marker = read_marker(out) if out.is_dir() else None
    previous = {k: v for k, v in (marker or {}).items() if k != "command"}
    if marker is not None and marker["command"] == command and previous != identity and not overwrite:
        differ = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        held = "; ".join(f"{k}: {previous.get(k)!r}" for k in differ)
        wanted = "; ".join(f"{k}: {identity.get(k)!r}" for k in differ)
        raise OutputError(
            f"{out} holds a run of `asarg {command}` with {held}, but this run has {wanted}. Resuming it would "
            "mix the two. Give a new --out folder, or pass --overwrite to start afresh in this one."
        )
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, command, **identity)
    return out


@contextmanager
def staged_dir(out: Path, command: str, marker: bool = True, **identity) -> Iterator[Path]:
    """Yield an empty staging folder next to `out`; on success it gets the marker (unless `marker=False`: a folder
    whose own files identify it, see `check_output_dir(owned=...)`) and replaces `out` (the old one is removed only
    after the new one is in place). On error the staging folder is removed and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        if marker:
            write_marker(staging, command, **identity)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_file(out: Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None) -> Iterator:
    """An open temporary file next to `out` that replaces `out` when the block ends without error."""
    out = Path(out)
    handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    text = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        with os.fdopen(handle, mode, **text) as stream:
            yield stream
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def add_output_file_option(parser, help: str, aliases: tuple[str, ...] = ()) -> None:
    """`--output FILE` (one meaning in every command: the file a command writes) and `--overwrite`; `aliases` are
    the command's older spellings, still accepted and not shown in `--help`."""
    parser.add_argument("--output", help=help)
    for alias in aliases:
        parser.add_argument(alias, dest="output", help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def add_format_option(parser, default: str = "text") -> None:
    """`--format json|text` (one meaning in every command: how results are written)."""
    parser.add_argument(
        "--format", choices=("json", "text"), default=default, help="json or text (default %(default)s)"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = [
    "MARKER",
    "OutputError",
    "add_format_option",
    "add_output_file_option",
    "check_output_dir",
    "claim_run_dir",
    "check_output_file",
    "read_marker",
    "staged_dir",
    "staged_file",
    "write_marker",
]
