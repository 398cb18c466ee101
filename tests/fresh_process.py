"""A fresh Python process that cannot import this repository: what a Hub user without asarg installed has."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import xray_like

# The first lines of every fresh-process script: nothing of this repository can be imported after them.
BLOCK_REPOSITORY = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockRepository(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"modeling_asarg", "asarg", "processing"}:
                raise ImportError(f"{name} must not be importable in this test")

    sys.meta_path.insert(0, BlockRepository())
    """
)

FRESH_PROCESS = BLOCK_REPOSITORY + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    folder, image_path, prompt, out_path = sys.argv[1:5]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    owner = AutoModel.from_pretrained(folder, trust_remote_code=True)  # the owner's usage line, verbatim
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(images=Image.open(image_path), text=prompt, return_tensors="pt")
    tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    owner_tokens = owner.eval().generate(**inputs, max_new_tokens=6, do_sample=False)
    json.dump({
        "config": type(config).__name__, "model": type(model).__name__, "owner": type(owner).__name__,
        "base": type(owner.model).__name__, "owner_tokens": owner_tokens.tolist(),
        "processor": type(processor).__name__, "module": type(model).__module__,
        "tokens": tokens.tolist(), "inputs": sorted(inputs),
    }, open(out_path, "w"))
    """
)


def generate_in_fresh_process(folder, prompt: str, tmp_path) -> dict:
    """Load `folder` with trust_remote_code in a fresh process that cannot import this repository, and generate 6
    greedy tokens for `xray_like()` and `prompt`: the loaded class names, the processor's outputs and the tokens."""
    image_path = tmp_path / "xray.png"
    xray_like().save(image_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "load.py"
    script.write_text(FRESH_PROCESS)
    result_path = elsewhere / "result.json"
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(script), str(folder), str(image_path), prompt, str(result_path)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result_path.read_text())
