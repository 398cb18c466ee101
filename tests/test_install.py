"""What a non-editable `pip install .` provides: only ASaRG's own top-level import names, the repository's folders as
sub-packages of `asarg` (with their data files), and a CLI, metric and scripts that work from that install alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow
_NOT_SOURCE = (".git", ".venv", "build", "dist", "outputs", "runs", "*.egg-info", "__pycache__", ".pytest_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --no-deps --target SITE .`: exactly what the install adds, without a second copy of torch."""
    root = tmp_path_factory.mktemp("install")
    # Build from a copy of the checkout: setuptools writes build/ into the source tree and would reuse stale files.
    source = shutil.copytree(REPO, root / "src", ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    site = root / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site]
    proc = subprocess.run([*map(str, command), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return site


def _run(site, code: str, cwd) -> subprocess.CompletedProcess:
    """Python with only the install (and the venv's third-party packages) importable, outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_top_level_names_are_ours_only(installed):
    top_level = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert top_level == {"asarg", "modeling_asarg"}


def test_repository_rooms_are_sub_packages_with_their_data(installed):
    package = installed / "asarg"
    for module in ("processing/image_io.py", "processing/synthcxr/generator.py", "evaluation/clinical_efficacy.py"):
        assert (package / module).is_file(), module
    assert (package / "evaluation/report_labeler/phrases/mention/cardiomegaly.txt").is_file()
    assert (package / "training/recipes/synthcxr_tiny_cpu.yaml").is_file()
    assert (package / "training/accelerate/ddp.yaml").is_file()


def test_imports_resolve_to_the_install_and_generic_names_do_not_exist(installed, tmp_path):
    code = (
        "import importlib.util, asarg, asarg.processing.image_io, asarg.evaluation.report_labeler, modeling_asarg\n"
        "print(asarg.__file__); print(modeling_asarg.__file__)\n"
        "print([n for n in ('processing', 'evaluation', 'training') if importlib.util.find_spec(n)])"
    )
    proc = _run(installed, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    asarg_file, modeling_file, generic = proc.stdout.splitlines()
    assert asarg_file.startswith(str(installed)) and modeling_file.startswith(str(installed))
    assert generic == "[]"


def test_cli_runs_from_the_install(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run([str(installed / "bin" / "asarg"), "--help"], cwd=tmp_path, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(name in proc.stdout.decode() for name in ("synth", "label", "evaluate", "convert-cxas"))
    proc = _run(installed, "from asarg.cli import main; main(['label', '--help'])", tmp_path)
    assert proc.returncode == 0 and "usage: asarg label" in proc.stdout, proc.stderr[-2000:]


def test_metric_folder_loads_with_evaluate_from_the_install(installed, tmp_path):
    code = (
        f"import evaluate; ce = evaluate.load({str(REPO / 'metrics' / 'chexpert_ce')!r})\n"
        "r = ce.compute(predictions=['Cardiomegaly.'], references=['The heart is enlarged.'])\n"
        "print(r['f1_micro'])"
    )
    proc = _run(installed, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == 1.0
