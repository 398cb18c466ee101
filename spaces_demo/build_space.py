"""Assemble the folder to push as the ASaRG Space: the app files plus the asarg wheel its requirements.txt installs.

    python spaces_demo/build_space.py OUT
    hf upload OWNER/SPACE OUT . --repo-type space

The same folder `asarg push-space ORG/NAME --dry-run --out OUT` writes (asarg.publish_space builds it; that command
also works from an installed wheel).

Why a wheel and not `asarg @ git+https://...`: the Space then runs exactly the checked-out code and the default model
embedded in it, needs no public repository, and builds without network access to GitHub. From a checkout the wheel is
built from it (`pip wheel --no-deps`), so build it from the commit you mean to publish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asarg.publish_space import SPACE_FILES, build, required_wheel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the Space folder to write (created if missing)")
    args = p.parse_args(argv)
    out = build(args.out)
    print(f"Space folder ready: {out}\n  hf upload OWNER/SPACE {out} . --repo-type space")
    return 0


__all__ = ["SPACE_FILES", "build", "main", "required_wheel"]

if __name__ == "__main__":
    sys.exit(main())
