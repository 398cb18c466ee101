"""Assemble the folder to push as the ASaRG Space: the app files plus the asarg wheel its requirements.txt installs.

    python spaces_demo/build_space.py OUT
    hf upload OWNER/SPACE OUT . --repo-type space

Why a wheel and not `asarg @ git+https://...`: the Space then runs exactly the checked-out code and the default model
embedded in it, needs no public repository, and builds without network access to GitHub. The wheel is built from
this checkout (`pip wheel --no-deps`), so build it from the commit you mean to publish.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPACE_FILES = ("app.py", "engine.py", "logic.py", "README.md", "requirements.txt")
_WHEEL_LINE = re.compile(r"^\./(asarg-[^\s\[]+\.whl)", re.MULTILINE)


def required_wheel(requirements: Path = HERE / "requirements.txt") -> str:
    """The wheel file name requirements.txt installs (`./asarg-<version>-py3-none-any.whl[extras]`)."""
    found = _WHEEL_LINE.findall(requirements.read_text(encoding="utf-8"))
    if len(found) != 1:
        raise SystemExit(f"{requirements} must name exactly one ./asarg-*.whl line; found {found or 'none'}.")
    return found[0]


def build(out: Path, python: str = sys.executable) -> Path:
    """Copy the Space files into `out` and build the wheel there; SystemExit if its name is not the required one."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(HERE / name, out / name)
    for old in out.glob("asarg-*.whl"):
        old.unlink()
    # --no-build-isolation: use this environment's setuptools, so building works offline.
    command = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(command, check=True)
    built = sorted(p.name for p in out.glob("asarg-*.whl"))
    wanted = required_wheel(out / "requirements.txt")
    if built != [wanted]:
        raise SystemExit(
            f"Built {built}, but requirements.txt installs {wanted}: update its wheel line to the package version."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the Space folder to write (created if missing)")
    args = p.parse_args(argv)
    out = build(args.out)
    print(f"Space folder ready: {out}\n  hf upload OWNER/SPACE {out} . --repo-type space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
