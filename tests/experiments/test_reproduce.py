"""`asarg reproduce` at toy sizes: the whole pipeline runs, and a kill -9 in the middle costs only the unfinished work —
the rerun ends with the same table as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow
ARGS = ["--quick", "--seeds", "0", "--arms", "baseline", "features+maps"]


def _command(out) -> list[str]:
    return [sys.executable, "-m", "asarg.cli", "reproduce", "--out", str(out), *ARGS]


def _env(tmp_path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}


def _run(out, tmp_path) -> None:
    proc = subprocess.run(_command(out), cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _kill_during_the_second_run(out, tmp_path) -> None:
    """Start the pipeline in its own process group and kill -9 all of it once the second run has a checkpoint."""
    proc = subprocess.Popen(
        _command(out),
        cwd=REPO,
        env=_env(tmp_path),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    second = out / "runs" / "n32-seed0-features+maps"
    deadline = time.monotonic() + 600
    while not any(second.glob("checkpoint-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the pipeline ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (second / "result.json").exists()


def _table(out) -> list:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [(r["size"], r["arm"], r["f1_micro"]["per_seed"], r["f1_macro"]["per_seed"]) for r in rows]


def test_kill_minus_9_then_rerun_gives_the_uninterrupted_table(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _run(clean, tmp_path)
    assert (clean / "results.md").is_file() and (clean / "results.png").is_file()
    assert json.loads((clean / "segmenter" / "dice.json").read_text())["dice"]
    _kill_during_the_second_run(killed, tmp_path)
    _run(killed, tmp_path)
    assert _table(killed) == _table(clean)
    for arm in ("baseline", "features+maps"):
        reports = [
            json.loads((out / "runs" / f"n32-seed0-{arm}" / "result.json").read_text())["reports"]
            for out in (clean, killed)
        ]
        assert reports[0] == reports[1], arm


def test_continued_regime_grows_the_trained_baseline_and_tables_it_against_a_fair_control(tmp_path):
    from safetensors.torch import load_file

    from asarg.experiments.cli import main

    out = tmp_path / "r"
    assert main(["--out", str(out), "--quick", "--seeds", "0", "--arms", "baseline"]) == 0
    assert main(["--out", str(out), "--quick", "--seeds", "0", "--continued"]) == 0  # grow() checks equal logits
    assert main(["--out", str(out), "--quick", "--seeds", "0", "1", "--table-only"]) == 0  # trains nothing ...
    assert not (out / "runs" / "n32-seed1-baseline").exists()
    rows = json.loads((out / "results.json").read_text())["rows"]  # ... and tables the seeds that finished
    assert [(row["arm"], row["seeds"]) for row in rows] == [("baseline", [0])]

    grown = out / "init" / "n32-seed0-continued-features+maps"
    config = json.loads((grown / "config.json").read_text())
    assert config["use_seg_features"] and config["use_seg_maps"]
    weights = load_file(grown / "model.safetensors")
    assert not weights["model.multi_modal_projector.seg_linear.weight"].any()  # starts as the baseline
    baseline = load_file(out / "runs" / "n32-seed0-baseline" / "model.safetensors")
    shared = [k for k in baseline if "seg_linear" not in k]
    assert all(baseline[k].equal(weights[k]) for k in shared)  # ... with the trained baseline's weights
    table = json.loads((out / "continued.json").read_text())
    assert [row["arm"] for row in table["rows"]] == ["continued-baseline", "continued-features+maps"]
    assert "vs_baseline_studies" in table["rows"][1]  # p-values against the continued baseline
    for name in ("continued-baseline", "continued-features+maps"):
        assert (out / "runs" / f"n32-seed0-{name}" / "result.json").is_file()
