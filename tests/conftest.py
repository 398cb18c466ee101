"""Shared fixtures: tiny models built in code, offline, CPU only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """A script of `benchmarks/quality/` imported as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / "quality" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rg1_path():
    """pydicom-data's real chest radiograph (RG1_UNCR.dcm, MONOCHROME1)."""
    pytest.importorskip("data_store", reason="pydicom-data (the `data` extra) holds RG1_UNCR.dcm")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    assert path, "pydicom-data is installed but RG1_UNCR.dcm was not found"
    return path


SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def tokenizer():
    from asarg.training.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def make_asarg(tokenizer):
    """Factory: (model, processor) for a tiny ASaRG; `live_seg=True` randomises the (zero-initialised) seg columns
    so that seg inputs change the output without training."""
    from asarg.training.tiny import tiny_asarg_config, tiny_processor
    from modeling_asarg import AsargForConditionalGeneration

    def make(live_seg: bool = False, seed: int = 0, **config_kwargs):
        config = tiny_asarg_config(tokenizer, **config_kwargs)
        torch.manual_seed(seed)
        model = AsargForConditionalGeneration(config).eval()
        if live_seg and config.seg_input_width:
            with torch.no_grad():
                model.model.multi_modal_projector.seg_linear.weight.normal_(0, 0.5)
        return model, tiny_processor(tokenizer, config)

    return make


@pytest.fixture
def live_checkpoint(make_asarg, tmp_path) -> str:
    """A saved tiny ASaRG with a built-in segmenter, maps and features (live seg columns, so tracing sees them)."""
    model, processor = make_asarg(live_seg=True)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def cpu_sft_config(tmp_path, **overrides):
    """TRL SFTConfig for a few CPU steps on a tiny model. `remove_unused_columns=False` keeps the seg columns (TRL
    keeps only messages/images otherwise); bf16 off because TRL turns it on by default."""
    import trl

    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        remove_unused_columns=False,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        max_length=None,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    return trl.SFTConfig(**{**defaults, **overrides})


def xray_like(height: int = 40, width: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8), mode="L")


def prompt_for(processor, report: str | None = None) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}]
    if report is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": report}]})
    return processor.apply_chat_template(messages)


def pytest_sessionfinish(session, exitstatus):
    """In CI every capability must run: a skip there means an install step is missing, so it fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; CI must install what they need.", red=True)
        session.exitstatus = 1


# numpy's AVX-512 kernels round exp/sin 1 ulp differently from its baseline (AVX2) ones, which moves about one
# SynthCXR pixel in five films by one grey level (masks, labels and reports are identical everywhere). SynthCXR's
# frozen content is defined under the baseline kernels; the switch only works before numpy is imported.
NUMPY_BASELINE_ENV = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
}


def pytest_pyfunc_call(pyfuncitem):
    """A test marked `numpy_baseline` runs in a child pytest with numpy's AVX-512 kernels off, where they are on."""
    if pyfuncitem.get_closest_marker("numpy_baseline") is None or os.environ.get("NPY_DISABLE_CPU_FEATURES"):
        return None
    from numpy._core._multiarray_umath import __cpu_features__

    if not __cpu_features__.get("AVX512F"):
        return None
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    env = {**os.environ, **NUMPY_BASELINE_ENV}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{pyfuncitem.nodeid} failed under numpy's baseline kernels:\n{proc.stdout[-3000:]}"
    return True


@pytest.fixture(scope="module")
def synthcxr(tmp_path_factory):
    """A small SynthCXR folder (16 studies at 64 px), one per test module."""
    from asarg.processing.synthcxr.dataset import write_dataset

    root = tmp_path_factory.mktemp("synthcxr")
    write_dataset(root, n=16, size=64)
    return root


@pytest.fixture(scope="module")
def sft():
    """The SFT recipe module (`training/sft_asarg.py`, installed as `asarg.training.sft_asarg`)."""
    from asarg.training import sft_asarg

    return sft_asarg


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory):
    """A small trained features+maps checkpoint with map dropout (`asarg reproduce --quick --default-model`: the
    default model's pipeline at toy sizes, ~15 s), with its `scores.json` beside it."""
    import shutil

    from asarg.experiments.cli import main

    out = tmp_path_factory.mktemp("quick-reproduce")
    assert main(["--out", str(out), "--quick", "--default-model"]) == 0
    run = out / "default" / "refine"
    shutil.copy2(out / "default" / "scores.json", run / "scores.json")
    return run
