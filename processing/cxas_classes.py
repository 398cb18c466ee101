"""The CXAS (PAX-Ray++) anatomy class list, shipped as package data (`cxas_classes.txt`, id<TAB>name).

Every mask name in this project (SynthCXR masks, segmentation caches, config `seg_class_names`) is one of these
159 names, spelled exactly as CXAS spells it, so that the same names flow through the whole system.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_CLASS_FILE = Path(__file__).with_name("cxas_classes.txt")


@cache
def cxas_classes() -> tuple[str, ...]:
    """All 159 class names, indexed by CXAS channel id."""
    names: dict[int, str] = {}
    for line in _CLASS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        idx, name = line.split("\t")
        names[int(idx)] = name.strip()
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{_CLASS_FILE}: class ids are not 0..N-1; the file is corrupt")
    return tuple(names[i] for i in range(len(names)))


def cxas_index(name: str) -> int:
    """CXAS channel id of a class name; raises ValueError naming close matches when the name is unknown."""
    classes = cxas_classes()
    try:
        return classes.index(name)
    except ValueError:
        close = [c for c in classes if name.split()[0].lower() in c.lower()][:6]
        raise ValueError(f"{name!r} is not a CXAS class name; similar names: {close}") from None


def check_cxas_names(names) -> None:
    """Raise ValueError if any name is not a CXAS class (catches typos such as 'left clavicle')."""
    for n in names:
        cxas_index(n)
