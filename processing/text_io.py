"""Text files in: UTF-8 (with or without a BOM) and UTF-16 (with a BOM, or without one when the NUL bytes show it);
anything else is a `ValueError` that names the file, the first byte that is not UTF-8 and what to do. Excel's
"CSV UTF-8" writes a BOM, which would otherwise become part of the first column's name."""

from __future__ import annotations

import codecs
import csv
import io
import os
from pathlib import Path


def decode_text(data: bytes, path: str | os.PathLike = "<bytes>") -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(data, "utf-16", path)
    elif len(data) >= 4 and data[1::2].count(0) * 2 >= len(data) // 2 and data[0::2].count(0) == 0:
        return _decode(data, "utf-16-le", path)  # ASCII-range UTF-16 without a BOM: every second byte is NUL
    elif len(data) >= 4 and data[0::2].count(0) * 2 >= len(data) // 2 and data[1::2].count(0) == 0:
        return _decode(data, "utf-16-be", path)
    return _decode(data, "utf-8", path)


def _decode(data: bytes, encoding: str, path) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not {encoding.upper()} text: byte 0x{data[error.start]:02x} at offset {error.start} cannot be "
            "read (a Windows-1252 / Latin-1 file, e.g. from Excel?). Save it as UTF-8 (Excel: 'CSV UTF-8'), or "
            f"convert it: iconv -f cp1252 -t utf-8 {path} > utf8.csv"
        ) from None


def read_text(path: str | os.PathLike) -> str:
    """The text of a file (see the module docstring); a missing file is a `ValueError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist (or is not a file).")
    return decode_text(path.read_bytes(), path)


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV file read with `read_text`."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


__all__ = ["decode_text", "read_csv", "read_text"]
