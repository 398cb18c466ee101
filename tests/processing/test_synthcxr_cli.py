"""`asarg synth` and `asarg contact-sheet` through the real CLI dispatcher."""

from __future__ import annotations

import json

from PIL import Image

from asarg.cli import main


def test_synth_command_writes_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--n", "10", "--out", str(out), "--seed", "2", "--size", "96"]) == 0
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["version"] == "synthcxr-v1" and info["splits"] == {"train": 8, "validation": 1, "test": 1}
    assert len(list((out / "images").glob("*.png"))) == 10 and len(list((out / "masks").glob("*.npz"))) == 10
    assert Image.open(next((out / "images").glob("*.png"))).size == (96, 96)
    assert "studies/s" in capsys.readouterr().out


def test_contact_sheet_command(tmp_path):
    path = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", str(path), "--n", "2", "--size", "96", "--cols", "2"]) == 0
    img = Image.open(path)
    assert img.size[0] == 2 * 2 * 96 and img.mode == "RGB"


def test_contact_sheet_writes_the_file_named_by_output(tmp_path):
    """`--output FILE` as in every command (`--out` is its older spelling here and still works)."""
    path = tmp_path / "named.png"
    assert main(["contact-sheet", "--output", str(path), "--n", "1", "--size", "64", "--cols", "1"]) == 0
    assert Image.open(path).size == (2 * 64, Image.open(path).size[1])


def test_contact_sheet_rows_are_as_tall_as_their_captions(tmp_path):
    """No empty band: each row's caption area ends just below its last line of text."""
    import numpy as np

    path = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", str(path), "--n", "4", "--size", "128", "--cols", "2"]) == 0
    pixels = np.asarray(Image.open(path).convert("L"))
    inked_rows = np.flatnonzero((pixels < 128).any(axis=1))
    assert pixels.shape[0] - inked_rows.max() <= 16, "white space below the last caption"
