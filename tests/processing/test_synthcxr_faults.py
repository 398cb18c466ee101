"""SynthCXR under faults: an interrupted `asarg synth` (exception, real kill -9, full disk), reruns into a folder that
holds another generation, images damaged or deleted after generation, bad `asarg synth` arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from asarg.cli import main
from asarg.processing.synthcxr import dataset as ds

SIZE = 64


def files_of(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """An uninterrupted generation, to compare against."""
    out = tmp_path_factory.mktemp("fresh") / "synth"
    ds.write_dataset(out, 12, seed=3, size=SIZE)
    return out


def interrupt_after(monkeypatch, k: int):
    """Make `write_dataset` die (as Ctrl-C would) while generating study k."""
    generate = ds.generate_study

    def dying(seed, index, size):
        if index == k:
            raise KeyboardInterrupt
        return generate(seed, index, size)

    monkeypatch.setattr(ds, "generate_study", dying)


def test_an_interrupted_generation_is_refused_by_the_loader_and_finished_by_a_rerun(tmp_path, monkeypatch, fresh):
    out = tmp_path / "synth"
    with monkeypatch.context() as m:
        interrupt_after(m, 5)
        with pytest.raises(KeyboardInterrupt):
            ds.write_dataset(out, 12, seed=3, size=SIZE)
    assert (out / ds.MARKER).is_file() and not (out / "dataset_info.json").exists()
    assert len(list((out / "images").glob("*.png"))) == 5  # the studies before the interruption are on disk
    for load in (ds.load_synthcxr, lambda root: ds.read_manifest(root, "train")):
        with pytest.raises(ValueError, match=r"incomplete SynthCXR dataset.*interrupted.*Rerun the same"):
            load(out)
    assert main(["synth", "--n", "12", "--seed", "3", "--size", str(SIZE), "--out", str(out)]) == 0
    assert files_of(out) == files_of(fresh)  # identical to a generation that was never interrupted
    assert len(ds.load_synthcxr(out)["train"]) == 10


def test_a_rerun_over_a_complete_dataset_keeps_it_complete_or_extends_it(tmp_path, fresh):
    out = tmp_path / "synth"
    ds.write_dataset(out, 12, seed=3, size=SIZE)
    ds.write_dataset(out, 12, seed=3, size=SIZE)
    assert files_of(out) == files_of(fresh)
    ds.write_dataset(out, 20, seed=3, size=SIZE)  # a larger n of the same seed contains the smaller one
    assert json.loads((out / "dataset_info.json").read_text())["n"] == 20


@pytest.mark.parametrize(
    ("rerun", "state"),
    [({"seed": 4}, "complete"), ({"size": 96}, "complete"), ({"n": 8}, "complete"), ({"seed": 4}, "interrupted")],
)
def test_a_rerun_that_would_mix_two_datasets_is_refused(tmp_path, monkeypatch, rerun, state, capsys):
    out = tmp_path / "synth"
    if state == "interrupted":
        with monkeypatch.context() as m:
            interrupt_after(m, 3)
            with pytest.raises(KeyboardInterrupt):
                ds.write_dataset(out, 12, seed=3, size=SIZE)
    else:
        ds.write_dataset(out, 12, seed=3, size=SIZE)
    before = files_of(out)
    args = {"n": 12, "seed": 3, "size": SIZE} | rerun
    argv = ["synth", "--out", str(out), *(x for k, v in args.items() for x in (f"--{k}", str(v)))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"holds {'a complete' if state == 'complete' else 'an interrupted'} SynthCXR generation" in err
    assert "would mix two datasets" in err and "seed=3" in err
    assert files_of(out) == before  # nothing was touched


def test_a_folder_with_synthcxr_like_files_but_no_dataset_info_is_refused(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert main(["synth", "--n", "2", "--size", str(SIZE), "--out", str(tmp_path)]) == 2
    assert "no dataset_info.json and no" in capsys.readouterr().err


def test_a_manifest_cut_short_is_refused(tmp_path):
    out = tmp_path / "synth"
    ds.write_dataset(out, 12, seed=3, size=SIZE)
    lines = (out / "train.jsonl").read_text().splitlines(keepends=True)
    (out / "train.jsonl").write_text("".join(lines[:-2]))
    with pytest.raises(ValueError, match=r"train.jsonl has 8 records, dataset_info.json says 10"):
        ds.load_synthcxr(out)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.unlink(), "missing image"),
        (lambda p: p.write_bytes(b""), "empty image file"),
        (lambda p: p.write_text("not a png"), "not an image"),
        (lambda p: p.write_bytes(p.read_bytes()[:-200]), "corrupt image"),
    ],
    ids=["deleted after generation", "0 bytes", "not an image", "cut off"],
)
def test_a_damaged_image_is_skipped_and_counted_or_named_with_strict(tmp_path, damage, problem, caplog):
    from asarg.processing.loaders import load_dataset_by_format

    out = tmp_path / "synth"
    ds.write_dataset(out, 12, seed=3, size=SIZE)
    record = ds.read_manifest(out, "train")[2]
    damage(out / record["image"])
    data = load_dataset_by_format("synthcxr", out)
    assert len(data["train"]) == 9 and record["id"] not in data["train"]["id"]
    assert f"skipped {{'{problem}': 1}}" in caplog.text
    with pytest.raises(ValueError, match=rf"study {record['id']}: {problem}.*{record['id']}.png"):
        load_dataset_by_format("synthcxr", out, strict=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "need n > 0 studies"),
        (["--n", "-3"], "need n > 0 studies"),
        (["--n", "2", "--size", "-5"], "need size >= 64"),
        (["--n", "2", "--seed", "-1"], "need a seed >= 0"),
        (["--n", "2", "--workers", "0"], "--workers 0"),
    ],
)
def test_bad_synth_arguments_are_one_line_errors_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_full_disk_leaves_an_incomplete_folder_and_a_clear_message(tmp_path, monkeypatch, capsys):
    write = ds.atomic_write

    def filling_up(path, data):  # the disk is full from the third image on
        if path.suffix == ".png" and not path.name.endswith(("000000.png", "000001.png")):
            raise OSError(28, "No space left on device")
        write(path, data)

    out = tmp_path / "synth"
    monkeypatch.setattr(ds, "atomic_write", filling_up)
    assert main(["synth", "--n", "12", "--seed", "3", "--size", str(SIZE), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun the same command" in err
    with pytest.raises(ValueError, match="incomplete SynthCXR dataset"):
        ds.load_synthcxr(out)


@pytest.mark.slow
def test_real_kill_9_mid_generation_then_rerun(tmp_path):
    out, n = tmp_path / "synth", "1500"
    synth = ["synth", "--n", n, "--seed", "3", "--size", str(SIZE), "--out", str(out)]
    big = [sys.executable, "-m", "asarg.cli", *synth]
    proc = subprocess.Popen(big, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "images").glob("*.png"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / ds.MARKER).is_file() and not (out / "dataset_info.json").exists()
    with pytest.raises(ValueError, match="incomplete SynthCXR dataset"):
        ds.load_synthcxr(out)
    # The same command finishes it; a smaller n than the interrupted run's would leave its extra files: refused.
    assert main(["synth", "--n", "12", "--seed", "3", "--size", str(SIZE), "--out", str(out)]) == 2
    assert main(synth) == 0
    assert len(ds.load_synthcxr(out)["train"]) == 1200
