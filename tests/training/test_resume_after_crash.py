"""A run killed while writing a checkpoint resumes from the newest COMPLETE one and ends with the weights of a run
that was never interrupted (max abs difference 0.0: same data order, RNG and optimizer state, CPU float32).

The uninterrupted 6-step reference runs once, in-process; the crash is simulated on a copy of its checkpoints (what
a kill -9 during the step-4 save leaves) and, separately, made real: a subprocess SIGKILLs itself half way through
writing checkpoint-4's trainer_state.json."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("trl")

RECIPE = REPO / "training" / "recipes" / "synthcxr_tiny_cpu.yaml"
SCRIPT = REPO / "training" / "sft_asarg.py"
# Checkpoints at steps 2, 4 and 6 of 6; a limit of 3 keeps all of them for the copies below.
STEPS = ("--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3")
# Run as a script: SIGKILL half way through writing checkpoint-4's trainer_state.json, as a crash would.
KILLER = """
import dataclasses, json, os, runpy, signal, sys
from transformers import TrainerState
save = TrainerState.save_to_json
def save_to_json(self, path):
    if self.global_step == 4:
        with open(path, "w") as f:
            f.write(json.dumps(dataclasses.asdict(self))[:50])
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, path)
TrainerState.save_to_json = save_to_json
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_main(sft, synthcxr, out, *overrides):
    argv = ["--config", str(RECIPE), "--dataset_name", str(synthcxr), "--output_dir", str(out), *STEPS, *overrides]
    return sft.main(*sft.make_parser().parse_args_and_config(argv))


@pytest.fixture(scope="module")
def uninterrupted(sft, synthcxr, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    run_main(sft, synthcxr, out)
    return out


def max_abs_diff(a, b) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def crashed_copy(uninterrupted, out):
    """The output folder as a kill -9 during the step-4 save leaves it: checkpoint-2 whole; checkpoint-4 with the
    weights not yet written and trainer_state.json created but empty; no checkpoint-6 and no final model."""
    out.mkdir()
    for step in (2, 4):
        shutil.copytree(uninterrupted / f"checkpoint-{step}", out / f"checkpoint-{step}")
    (out / "checkpoint-4" / "model.safetensors").unlink()
    (out / "checkpoint-4" / "trainer_state.json").write_bytes(b"")
    return out


def test_resume_true_skips_the_checkpoint_cut_off_by_a_crash(sft, synthcxr, uninterrupted, tmp_path, caplog):
    out = crashed_copy(uninterrupted, tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="asarg.sft"):
        trainer = run_main(sft, synthcxr, out, "--resume_from_checkpoint", "true")
    warning = next(r.getMessage() for r in caplog.records if "not a complete checkpoint" in r.getMessage())
    assert "checkpoint-4" in warning and "trainer_state.json is empty" in warning and "checkpoint-2" in warning
    assert trainer.state.global_step == 6
    assert max_abs_diff(out, uninterrupted) == 0.0


def test_every_checkpoint_broken_is_a_clear_error(sft, synthcxr, uninterrupted, tmp_path):
    out = crashed_copy(uninterrupted, tmp_path / "out")
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(
        ValueError,
        match=r"no checkpoint in .* is complete .*checkpoint-4: trainer_state.json is "
        r"empty.*checkpoint-2: optimizer.pt is cut off",
    ):
        run_main(sft, synthcxr, out, "--resume_from_checkpoint", "true")


def test_an_explicit_broken_checkpoint_is_a_clear_error(sft, synthcxr, uninterrupted, tmp_path):
    out = crashed_copy(uninterrupted, tmp_path / "out")
    with pytest.raises(ValueError, match="cannot be resumed from: trainer_state.json is empty"):
        run_main(sft, synthcxr, out, "--resume_from_checkpoint", str(out / "checkpoint-4"))


@pytest.mark.slow
def test_real_kill_9_while_saving_then_resume_true(synthcxr, uninterrupted, tmp_path):
    out, killer = tmp_path / "out", tmp_path / "killer.py"
    killer.write_text(KILLER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    args = ["--config", str(RECIPE), "--dataset_name", str(synthcxr), "--output_dir", str(out), *STEPS]

    def run(*command):
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)

    killed = run(sys.executable, str(killer), str(SCRIPT), *args)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "checkpoint-4" / "trainer_state.json").stat().st_size == 50 and not (out / "checkpoint-6").exists()
    resumed = run(sys.executable, str(SCRIPT), *args, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipping" in resumed.stderr and "checkpoint-4" in resumed.stderr.split("Skipping", 1)[1][:200]
    assert max_abs_diff(out, uninterrupted) == 0.0


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda d: _cut(d / "trainer_state.json"), "trainer_state.json does not parse"),
        (lambda d: _cut(d / "model.safetensors"), "model.safetensors is 15"),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00"),
            "model.safetensors is cut off inside its header",
        ),
        (lambda d: (d / "optimizer.pt").unlink(), "no optimizer state"),
        (lambda d: _cut(d / "optimizer.pt"), "optimizer.pt is cut off"),
        (lambda d: (d / "scheduler.pt").unlink(), "no scheduler state"),
        (lambda d: (d / "rng_state.pth").write_bytes(b""), "rng_state.pth is empty"),
        (lambda d: (d / "rng_state.pth").unlink(), "no RNG state"),
        (
            lambda d: d.rename(d.with_name("checkpoint-3")),
            "trainer_state.json says global_step 2, the folder name says 3",
        ),
    ],
)
def test_checkpoint_problem_names_what_a_crash_left_behind(uninterrupted, tmp_path, damage, problem):
    from asarg.training.checkpoints import checkpoint_problem

    folder = tmp_path / "checkpoint-2"
    shutil.copytree(uninterrupted / "checkpoint-2", folder)
    assert checkpoint_problem(folder) is None
    damage(folder)
    found = checkpoint_problem(folder if folder.exists() else tmp_path / "checkpoint-3")
    assert found is not None and found.startswith(problem), found
    if problem.startswith("no "):  # a save_only_model run writes no optimizer, scheduler or RNG state
        assert checkpoint_problem(folder, save_only_model=True) is None


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
