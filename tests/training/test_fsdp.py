"""FSDP in two CPU processes (gloo): torch FSDP2 `fully_shard` trains the small-synth recipe's model and saves a
checkpoint that loads; `accelerate launch` with training/accelerate/fsdp.yaml does not shard on CPU at all but trains
plain DDP, silently, which the second test pins so the notes stay true."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytest.importorskip("trl")
sys.path.insert(0, str(REPO / "benchmarks" / "perf"))

import perf_train  # noqa: E402

ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module")
def recipe_inputs(tmp_path_factory):
    """A small-synth checkpoint with random weights and a SynthCXR folder (perf_train.prepare)."""
    return perf_train.prepare(tmp_path_factory.mktemp("fsdp"), n_studies=40)


@pytest.mark.slow
def test_fully_shard_trains_two_processes_and_saves_a_checkpoint_that_loads(recipe_inputs, tmp_path):
    from transformers import AutoModelForImageTextToText

    checkpoint, data = recipe_inputs
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [
        str(REPO / "benchmarks" / "perf" / "perf_fsdp_worker.py"),
        str(checkpoint),
        str(data),
        str(tmp_path),
        "2",
        "2",
    ]
    # No PYTHONPATH from this process: other tests put the parity references (a real torchvision) on sys.path.
    env = {**ENV, "HOME": str(tmp_path)}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["units"] == 9 for r in ranks), ranks  # 4 Llama + 4 CLIP layers + root
    assert all(math.isfinite(loss) for r in ranks for loss in r["losses"])
    assert ranks[0]["reloaded_equal"] and ranks[0]["trained"], ranks[0]
    saved = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint")
    seg_columns = saved.model.multi_modal_projector.seg_linear.weight
    assert (tmp_path / "checkpoint" / "modeling_asarg.py").is_file() and torch.count_nonzero(seg_columns) > 0


@pytest.mark.slow
def test_accelerate_with_the_fsdp_yaml_trains_plain_ddp_on_cpu(recipe_inputs, tmp_path):
    """accelerate 1.x turns FSDP on only for accelerator devices (AcceleratorState: MULTI_GPU, MULTI_XPU, ...); on CPU
    it stays MULTI_CPU and wraps the model in DistributedDataParallel. If this fails, accelerate shards on CPU now:
    update training/accelerate/fsdp.yaml's header and docs/results/performance.md."""
    checkpoint, data = recipe_inputs
    args = perf_train.recipe_args(checkpoint, data, tmp_path / "trainer", 1, 2)
    run = perf_train.launch(2, args, tmp_path, {"HOME": str(tmp_path)}, perf_train.accelerate_fsdp_launcher())
    assert run["returncode"] == 0, run["stderr_tail"]
    assert [r["wrapped_model"] for r in run["ranks"]] == ["DistributedDataParallel"] * 2
    assert all(r["accelerate_use_fsdp"] == "true" and not r["fsdp_enabled"] for r in run["ranks"])
