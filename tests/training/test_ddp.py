"""The same SFT path runs data-parallel. Two processes under torchrun on CPU (gloo) stay in sync.

(`accelerate launch --cpu --num_processes 2` silently runs ONE process — accelerate sends --cpu to its simple launcher — so torchrun it is.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("trl")


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_replicas_in_sync(tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free local rendezvous port, so parallel runs cannot collide
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "training" / "scripts" / "ddp_sft.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and "MULTI_CPU" in r["distributed_type"] for r in ranks), ranks
    assert ranks[0]["seg_abs"] > 0, "the seg columns did not train"
    assert ranks[0]["seg_checksum"] == ranks[1]["seg_checksum"]
