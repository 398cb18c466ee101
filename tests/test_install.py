"""What a non-editable `pip install .` provides: only ASaRG's own top-level import names, the repository's folders as
sub-packages of `asarg` (with their data files), and a CLI, metric and scripts that work from that install alone:
`asarg push-metric` and `asarg push-space` included, from the files the install ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

from asarg.publish_metric import SIBLINGS

pytestmark = pytest.mark.slow
METRIC = REPO / "metrics" / "chexpert_ce"
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


def _asarg(site, argv: list[str], cwd) -> subprocess.CompletedProcess:
    """The installed `asarg` script, with only the install importable of asarg and outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf")}
    command = [str(site / "bin" / "asarg"), *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_push_metric_dry_run_from_the_install(installed, tmp_path):
    out = tmp_path / "metric"
    proc = _asarg(installed, ["push-metric", "org/x", "--dry-run", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dry run: nothing uploaded" in proc.stdout
    shipped = installed / "asarg" / "metrics" / "chexpert_ce"
    files = {*(f"{module}.py" for module in SIBLINGS), "tests.py", "README.md", "app.py", "requirements.txt"}
    files.add("LICENSE.chexpert-labeler")
    assert {p.name for p in out.iterdir()} == files | {"x.py"}
    for name in files - {"README.md", "app.py"}:  # copied as shipped; the card and app name the Space's script
        assert (out / name).read_bytes() == (shipped / name).read_bytes() == (METRIC / name).read_bytes(), name
    assert 'evaluate.load("org/x")' in (out / "x.py").read_text() and '"x.py"' in (out / "app.py").read_text()


def test_push_space_dry_run_from_the_install_packs_the_installed_asarg(installed, tmp_path):
    out = tmp_path / "space"
    proc = _asarg(installed, ["push-space", "org/y", "--dry-run", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dry run: nothing uploaded" in proc.stdout
    for name in ("app.py", "engine.py", "logic.py", "README.md", "requirements.txt"):
        assert (out / name).read_bytes() == (REPO / "spaces_demo" / name).read_bytes(), name
    wheels = sorted(out.glob("asarg-*.whl"))
    assert len(wheels) == 1 and f"./{wheels[0].name}[data]" in (out / "requirements.txt").read_text()
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert {"asarg/default_model/model.safetensors", "modeling_asarg/modeling_asarg.py"} <= names
    assert not any(n.endswith((".pyc", "/INSTALLER", "/direct_url.json")) for n in names)
    # The packed wheel installs (pip checks its layout) to exactly the files of the install it was packed from.
    again = tmp_path / "again"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(again), str(wheels[0])]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for package in ("asarg", "modeling_asarg"):
        assert _tree(again / package) == _tree(installed / package), package


def _tree(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
