"""The small-synth recipe with LoRA runs data-parallel: two processes under torchrun on CPU (gloo) end with
bit-identical trainable weights (LoRA A/B and the projector's trained copy), and rank 0's adapter is those weights.

(torchrun, not `accelerate launch --cpu --num_processes 2`, which silently runs ONE process.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("trl")
peft = pytest.importorskip("peft")

WORKER = REPO / "tests" / "training" / "scripts" / "ddp_lora_sft.py"
RECIPE = REPO / "training" / "recipes" / "small_synth_cpu.yaml"
# The tiny recipe's LoRA keys: LoRA on the language model's projections, the new projector trained in full.
LORA = [
    "--use_peft",
    "true",
    "--lora_target_modules",
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    "--lora_modules_to_save",
    "multi_modal_projector",
]


def run_two_ranks(json_dir, recipe_args: list[str], timeout: int = 300) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen(
        [*command, str(WORKER), str(json_dir), *recipe_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout can then stop the ranks too, not only torchrun
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(json_dir)},
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s (a rank hung):\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return [json.loads((json_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def load_worker():
    """The worker's checksum, so the saved adapter is hashed exactly as the ranks hashed their weights."""
    spec = importlib.util.spec_from_file_location("ddp_lora_sft", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_process_lora_ddp_of_the_small_synth_recipe_ends_with_identical_weights(quick_model, synthcxr, tmp_path):
    init = quick_model.parents[1] / "init" / "features+maps"
    out = tmp_path / "run"
    args = ["--config", str(RECIPE), "--model_name_or_path", str(init), "--dataset_name", str(synthcxr)]
    args += ["--output_dir", str(out), "--max_steps", "3", "--logging_steps", "1", *LORA]
    ranks = run_two_ranks(tmp_path, args)

    assert [r["world_size"] for r in ranks] == [2, 2], ranks[0]["world_size"]
    assert all("MULTI_CPU" in r["distributed_type"] and r["backend"] == "gloo" for r in ranks)
    trained = ranks[0]["trainable"]
    assert any("lora_A" in n for n in trained) and any("modules_to_save" in n for n in trained), sorted(trained)[:5]
    assert not any("vision_tower" in n or "segmenter" in n for n in trained), "LoRA must stay in the language model"
    differing = [n for n in trained if trained[n]["sha256"] != ranks[1]["trainable"][n]["sha256"]]
    assert not differing and trained.keys() == ranks[1]["trainable"].keys(), f"the ranks differ in {differing[:5]}"

    lora_b = [v["abs"] for n, v in trained.items() if "lora_B" in n]
    assert lora_b and all(value > 0 for value in lora_b), "a LoRA B matrix is still at its zero init"
    original = {
        n.replace("original_module", "modules_to_save.default"): v for n, v in ranks[0]["frozen_projector"].items()
    }
    assert original and all(trained[n]["sha256"] != v["sha256"] for n, v in original.items()), (
        "projector did not train"
    )

    from transformers import AutoModelForImageTextToText

    assert (out / "adapter_model.safetensors").is_file(), sorted(p.name for p in out.iterdir())
    reloaded = peft.PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(init), out, is_trainable=True
    )
    saved = load_worker().trainable_checksums(reloaded)
    assert {n: v["sha256"] for n, v in saved.items()} == {n: v["sha256"] for n, v in trained.items()}
