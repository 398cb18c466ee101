"""Atomic writes: readers see the old file or the whole new one, and the new file has the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from asarg.processing.atomic import atomic_write


def test_atomic_write_replaces_whole_files_with_the_umask_permissions(tmp_path):
    path = tmp_path / "results.json"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write(path, b"old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes")
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
