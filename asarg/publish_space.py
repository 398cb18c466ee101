"""`asarg push-space`: the Gradio Space folder (the app files + the asarg wheel with the default model) -> the Hub.

    asarg push-space org/asarg-demo --dry-run --out space-folder   # write the exact folder, list what would go up
    asarg push-space org/asarg-demo [--private] [--model org/asarg]

The app files ship with asarg (`spaces_demo/`, installed as the data package `asarg.spaces_demo`). The Space's
requirements.txt installs the asarg wheel beside it, which comes from the asarg that runs this command:

- from a source checkout (an editable install, or the tree on the path): `pip wheel --no-deps` of the checkout, so
  run it at the commit you mean to publish;
- from an installed wheel: the installed distribution packed back into a wheel, file for file as its RECORD lists
  them (the installer's own files, INSTALLER / REQUESTED / direct_url.json, and bytecode left out). Nothing is built
  or downloaded, and the Space runs exactly the code and default model that are installed.

`--model` sets the Space variable `ASARG_MODEL`, so the Space loads a Hub model instead of the embedded one.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import hashlib
import importlib.metadata
import importlib.resources
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from asarg.processing.outputs import staged_dir

from .publish import publish_options, run_publish

PACKAGE = "asarg.spaces_demo"  # spaces_demo/ of the checkout
SPACE_FILES = ("app.py", "engine.py", "logic.py", "README.md", "requirements.txt")
_WHEEL_LINE = re.compile(r"^\./(asarg-[^\s\[]+\.whl)", re.MULTILINE)
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}  # written by the installer, not the wheel


def space_source() -> Path:
    """The Space's files shipped with asarg (the checkout's `spaces_demo/` in an editable install)."""
    return Path(str(importlib.resources.files(PACKAGE)))


def required_wheel(requirements: Path | None = None) -> str:
    """The wheel file name requirements.txt installs (`./asarg-<version>-py3-none-any.whl[extras]`)."""
    requirements = space_source() / "requirements.txt" if requirements is None else requirements
    found = _WHEEL_LINE.findall(requirements.read_text(encoding="utf-8"))
    if len(found) != 1:
        raise ValueError(f"{requirements} must name exactly one ./asarg-*.whl line; found {found or 'none'}.")
    return found[0]


def source_checkout() -> Path | None:
    """The source tree the running asarg comes from (pyproject.toml beside the `asarg/` folder), or None when it runs
    from an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "spaces_demo").is_dir() else None


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_installed(out: Path) -> Path:
    """The installed asarg distribution as a wheel in `out` (its name from the installed version and WHEEL tag)."""
    dist = importlib.metadata.distribution("asarg")
    running = Path(__file__).resolve().parent / "__init__.py"
    if Path(dist.locate_file("asarg/__init__.py")).resolve() != running:
        raise ValueError(
            f"The installed asarg distribution ({dist.locate_file('')}) is not the asarg that runs ({running.parent}): "
            "cannot tell which one to pack for the Space."
        )
    files = [f for f in dist.files or () if ".." not in f.parts and "__pycache__" not in f.parts]
    info = {f.parts[0] for f in files if f.parts[0].endswith(".dist-info")}
    if len(info) != 1:
        raise ValueError(f"The installed asarg has {len(info)} .dist-info folders in its RECORD; cannot pack it.")
    info = info.pop()
    tag = email.parser.Parser().parsestr(dist.read_text("WHEEL") or "").get_all("Tag") or []
    if len(tag) != 1:
        raise ValueError(f"The installed asarg's WHEEL names {len(tag)} tags; cannot name the wheel.")
    wheel = out / f"asarg-{dist.version}-{tag[0]}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(files, key=lambda f: f.as_posix()):
            if file.parts[0] == info and file.name in _INSTALLER_FILES:
                continue
            path = Path(file.locate())
            if not path.is_file():
                raise FileNotFoundError(f"{path} is listed in the installed asarg's RECORD but missing: reinstall it.")
            data = path.read_bytes()
            entry = zipfile.ZipInfo(file.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))  # the same files, the same wheel
            entry.external_attr, entry.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
            record.append(f"{file.as_posix()},{_record_hash(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        entry = zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr, entry.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
        archive.writestr(entry, "\n".join(record) + "\n")
    return wheel


def build(out: Path, python: str = sys.executable) -> Path:
    """Copy the Space files into `out` and put the asarg wheel beside them (see the module's docstring for where it
    comes from); ValueError if its name is not the one requirements.txt installs."""
    out.mkdir(parents=True, exist_ok=True)
    source = space_source()
    for name in SPACE_FILES:
        shutil.copy2(source / name, out / name)
    for old in out.glob("asarg-*.whl"):
        old.unlink()
    checkout = source_checkout()
    if checkout is None:
        repack_installed(out)
    else:  # --no-build-isolation: use this environment's setuptools, so building works offline
        command = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
        subprocess.run([*command, str(checkout)], check=True)
    built = sorted(p.name for p in out.glob("asarg-*.whl"))
    wanted = required_wheel(out / "requirements.txt")
    if built != [wanted]:
        raise ValueError(
            f"Built {built}, but requirements.txt installs {wanted}: update its wheel line to the package version."
        )
    return out


def build_space_folder(out: Path) -> Path:
    """Build the Space folder in a staging folder and move it to `out` (check `out` first: it is replaced)."""
    with staged_dir(Path(out), "push-space") as staging:
        build(staging, python=sys.executable)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg push-space", description=__doc__.split("\n\n")[0])
    p.add_argument("repo_id", help="the Space, e.g. org/asarg-demo")
    p.add_argument("--model", help="a Hub model id for the Space to load (sets the Space variable ASARG_MODEL)")
    args = publish_options(p).parse_args(argv)

    def set_model(folder: Path) -> None:
        if args.model:
            from huggingface_hub import HfApi

            HfApi(token=args.token).add_space_variable(args.repo_id, "ASARG_MODEL", args.model)

    return run_publish(
        "push-space",
        args.repo_id,
        args,
        build_space_folder,
        inputs=[space_source()],
        folder_name="space",
        repo_type="space",
        after=set_model,
    )


__all__ = ["SPACE_FILES", "build", "build_space_folder", "main", "repack_installed", "required_wheel", "space_source"]
