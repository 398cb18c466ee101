"""The metric folder `metrics/chexpert_ce/`: its CE and labeler modules are the package's own files (links), it loads with `evaluate` alone (a fresh virtual environment without asarg) and scores like the package, its template
`tests.py` cases pass; `asarg push-metric` copies it, lists it and publishes it as a Gradio Space (the Hub is not
reachable, so the upload calls are recorded)."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asarg.evaluation import clinical_efficacy, report_labeler
from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.evaluation.report_labeler import phrases
from asarg.publish_metric import SIBLINGS, build_metric_folder, main

REPO = Path(__file__).resolve().parents[2]
METRIC = REPO / "metrics" / "chexpert_ce"
OPENI = REPO.parent / "shared" / "data" / "openi" / "indiana_reports.csv"
FOLDER = {
    "chexpert_ce.py",
    *(f"{module}.py" for module in SIBLINGS),
    "tests.py",
    "README.md",
    "app.py",
    "requirements.txt",
    "LICENSE.chexpert-labeler",
}
DEFINITIONS = [{}, {"uncertain": "positive", "labels": 5}]

# A process without this repository: asarg is blocked even though the venv has it installed (editable), the
# working directory is outside the checkout, and sys.path[0] is the script's own folder.
BLOCKER = """
import importlib.abc, sys

class BlockRepository(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"asarg", "modeling_asarg", "processing", "evaluation"}:
            raise ImportError(f"{name} must not be importable in this test")

sys.meta_path.insert(0, BlockRepository())
"""

LOAD_AND_SCORE = """
import doctest, importlib, json
import evaluate, evaluate.config

hub, inputs, out_path = sys.argv[1:4]
inputs = json.load(open(inputs))
predictions, references, definitions = inputs["p"], inputs["r"], inputs["d"]
try:
    import asarg
    raise SystemExit("asarg is importable: the test would prove nothing")
except ImportError:
    pass
local = evaluate.load(hub + "/org/chexpert_ce")  # the folder, by path
# evaluate's Hub loader, pointed at a folder laid out like the Space: it fetches <name>.py and its relative imports.
evaluate.config.HUB_EVALUATE_URL = hub + "/{path}/{name}"
remote = evaluate.load("org/chexpert_ce")
doctest.testmod(sys.modules[type(remote).__module__], raise_on_error=True, extraglobs={"evaluate": evaluate})
batched = evaluate.load("org/chexpert_ce")
for i in range(0, len(predictions), 20):
    batched.add_batch(predictions=predictions[i : i + 20], references=references[i : i + 20])
phrases = importlib.import_module(type(remote).__module__.rpartition(".")[0] + ".phrases")
json.dump({
    "local": [local.compute(predictions=predictions, references=references, **d) for d in definitions],
    "remote": [remote.compute(predictions=predictions, references=references, **d) for d in definitions],
    "batched": batched.compute(),
    "module": type(remote).__module__,
    "phrase_files": phrases.PHRASE_FILES,
    "pattern_keys": {kind: sorted(table) for kind, table in phrases.load_phrase_patterns().items()},
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in {"asarg", "modeling_asarg"}),
}, open(out_path, "w"))
"""


def openi_pairs(n: int = 50, same: int = 15) -> tuple[list[str], list[str]]:
    """`n` real IU X-ray reports (findings + impression), half with MeSH findings and half normal, spread over the
    collection; the predictions are the same reports, the first `same` in place and the rest shuffled, so every
    score is strictly between 0 and 1."""
    if not OPENI.is_file():
        pytest.fail(f"Open-i reports missing at {OPENI}: the shared folder must sit beside the checkout.")
    with OPENI.open(newline="", encoding="utf-8") as f:
        rows = [
            (" ".join(p.strip() for p in (r["findings"], r["impression"]) if p.strip()), r["MeSH"])
            for r in csv.DictReader(f)
        ]
    abnormal = [text for text, mesh in rows if text and mesh != "normal"]
    normal = [text for text, mesh in rows if text and mesh == "normal"]
    half = n // 2
    references = [
        r
        for pair in zip(abnormal[:: len(abnormal) // half][:half], normal[:: len(normal) // half][:half], strict=True)
        for r in pair
    ]
    shuffled = references[same:]
    random.Random(11).shuffle(shuffled)
    return references[:same] + shuffled, references


def run_fresh(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "run.py").write_text(BLOCKER + script)
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env |= {"HF_DATASETS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(elsewhere / "run.py"), *args]
    proc = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """The folder `asarg push-metric org/chexpert_ce` uploads, at <hub>/org/chexpert_ce."""
    hub = tmp_path_factory.mktemp("hub")
    return build_metric_folder(hub / "org" / "chexpert_ce", "org/chexpert_ce")


@pytest.fixture(scope="module")
def fresh(space, tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("fresh")
    predictions, references = openi_pairs()
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"p": predictions, "r": references, "d": DEFINITIONS}))
    run_fresh(LOAD_AND_SCORE, [str(space.parents[1]), str(inputs), str(tmp_path / "out.json")], tmp_path)
    return json.loads((tmp_path / "out.json").read_text())


def expected(**definition) -> dict:
    predictions, references = openi_pairs()
    return json.loads(json.dumps(compute_ce(predictions, references, **definition)))


# ---- the published folder, loaded where asarg cannot be imported --------------------------------------------------


@pytest.mark.slow
def test_folder_and_hub_loads_score_real_reports_exactly_like_the_package(fresh):
    assert fresh["loaded"] == []
    for i, definition in enumerate(DEFINITIONS):
        want = expected(**definition)
        assert 0 < want["f1_micro"] < 1 and 0 < want["f1_macro"] < 1, "fixture too easy or too hard"
        assert fresh["local"][i] == want, definition
        assert fresh["remote"][i] == want, definition
    assert fresh["batched"] == expected()
    assert fresh["module"].startswith("evaluate_modules.metrics.org--chexpert_ce.")


@pytest.mark.slow
def test_the_published_labeler_carries_the_phrase_lists_and_compiles_them(fresh):
    lists = {name: list(lines) for name, lines in phrases.read_phrase_dir(phrases.PHRASE_DIR).items()}
    assert fresh["phrase_files"] == lists
    assert fresh["pattern_keys"] == {kind: sorted(table) for kind, table in phrases.load_phrase_patterns().items()}


@pytest.mark.slow
def test_space_app_scores_with_evaluate_and_gradio_alone(space, tmp_path):
    script = """
import importlib.util, json
spec = importlib.util.spec_from_file_location("space_app", sys.argv[1] + "/app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
result = app.score("Mild cardiomegaly. No effusion.\\nNo acute disease.\\n", "Cardiomegaly.\\nSmall effusion.")
try:
    app.score("a\\nb", "a")
    error = None
except Exception as err:
    error = f"{type(err).__name__}: {err}"
print(json.dumps({"demo": type(app.demo).__name__, "f1": result["f1_micro"], "error": error}))
"""
    out = json.loads(run_fresh(script, [str(space)], tmp_path).stdout.strip().splitlines()[-1])
    assert out["demo"] == "Interface"
    assert (
        out["f1"]
        == compute_ce(["Mild cardiomegaly. No effusion.", "No acute disease."], ["Cardiomegaly.", "Small effusion."])[
            "f1_micro"
        ]
    )
    assert out["error"].startswith("Error: ") and "2 predictions but 1 references" in out["error"]


# ---- what is generated ------------------------------------------------------------------------------------------


def test_the_published_script_differs_from_the_in_repo_one_only_in_its_load_example(tmp_path):
    folder = build_metric_folder(tmp_path / "x", "org/x")
    assert {p.name for p in folder.iterdir()} == FOLDER - {"chexpert_ce.py"} | {"x.py"}
    ours = (METRIC / "chexpert_ce.py").read_text().splitlines()
    published = (folder / "x.py").read_text().splitlines()
    changed = [(a, b) for a, b in zip(ours, published, strict=True) if a != b]
    assert changed == [('    >>> ce = evaluate.load("metrics/chexpert_ce")', '    >>> ce = evaluate.load("org/x")')]
    assert 'Path(__file__).with_name("x.py")' in (folder / "app.py").read_text()
    assert 'evaluate.load("org/x")' in (folder / "README.md").read_text()
    for name in (*(f"{module}.py" for module in SIBLINGS), "tests.py", "requirements.txt", "LICENSE.chexpert-labeler"):
        assert (folder / name).read_bytes() == (METRIC / name).read_bytes(), name


def package_file(module: str) -> Path:
    """The package's source file of a sibling module of the metric script."""
    if module == "clinical_efficacy":
        return Path(clinical_efficacy.__file__)
    if module == "report_labeler":
        return Path(report_labeler.__file__)
    return Path(importlib.import_module(f"asarg.evaluation.report_labeler.{module}").__file__)


@pytest.mark.parametrize("module", SIBLINGS)
def test_each_sibling_is_the_package_module_and_imports_only_its_siblings(module):
    """The folder's modules are the package's files (one source, nothing to regenerate), and they import each other
    only relatively and by module name, so they work side by side in the flat folder evaluate builds."""
    assert (METRIC / f"{module}.py").resolve() == package_file(module).resolve()
    for node in ast.walk(ast.parse(package_file(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            named = [node.module] if node.module else [alias.name for alias in node.names]
            assert node.level == 1 and all(name in SIBLINGS for name in named), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            roots = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            assert all(r.split(".")[0] not in {"asarg", "modeling_asarg"} for r in roots), ast.unparse(node)


def test_the_published_folder_holds_plain_files(space):
    """The upload reads files, not links: each sibling arrives as the package module's text."""
    for module in SIBLINGS:
        assert not (space / f"{module}.py").is_symlink()
        assert (space / f"{module}.py").read_bytes() == package_file(module).read_bytes(), module


def test_card_is_a_gradio_space_and_requirements_need_no_asarg(space):
    card = (space / "README.md").read_text()
    front = card.split("---\n")[1]
    for line in ("title: CheXpert CE", "sdk: gradio", "app_file: app.py", "- evaluate", "- metric"):
        assert line in front.splitlines(), line
    requirements = [r for r in (space / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert [re.split(r"[<>=]", r)[0] for r in requirements] == ["evaluate", "datasets", "numpy"]


def test_the_phrase_module_is_generated_from_the_phrase_folder():
    generated = Path(phrases.__file__).with_name("phrase_lists.py")
    assert generated.read_text(encoding="utf-8") == phrases.phrase_module(), (
        "phrase_lists.py differs from phrases/: run `make metric` (python -m asarg.evaluation.report_labeler.phrases)"
    )
    assert phrases.PHRASE_FILES == phrases.read_phrase_dir(phrases.PHRASE_DIR)
    assert phrases.load_phrase_patterns(str(phrases.PHRASE_DIR)) == phrases.load_phrase_patterns()


def test_an_edited_phrase_list_changes_the_generated_module(tmp_path):
    folder = shutil.copytree(phrases.PHRASE_DIR, tmp_path / "phrases")
    edema = folder / "mention" / "edema.txt"
    edema.write_text(edema.read_text() + "wet lung\n")
    text = phrases.phrase_module(folder)
    assert text != phrases.phrase_module() and "'wet lung'," in text
    namespace: dict = {}
    exec(compile(text, "phrase_lists.py", "exec"), namespace)
    assert namespace["PHRASE_FILES"] == phrases.read_phrase_dir(folder)
    assert "wet lung" in phrases.load_phrase_patterns(str(folder))["mention"]["Edema"]


def test_the_script_imports_only_libraries_and_each_sibling():
    tree = ast.parse((METRIC / "chexpert_ce.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    relative = [ast.unparse(node) for node in imports if getattr(node, "level", 0)]
    assert sorted(node.module for node in imports if getattr(node, "level", 0)) == sorted(SIBLINGS)
    assert "from .clinical_efficacy import check_pair, compute_ce, validate_batch" in relative
    absolute = {alias.name.split(".")[0] for node in imports if isinstance(node, ast.Import) for alias in node.names}
    absolute |= {node.module.split(".")[0] for node in imports if isinstance(node, ast.ImportFrom) and not node.level}
    assert absolute == {"datasets", "evaluate"}


def test_the_templates_test_cases_pass():
    import evaluate

    spec = importlib.util.spec_from_file_location("chexpert_ce_tests", METRIC / "tests.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    assert len(cases.test_cases) >= 5
    metric = evaluate.load(str(METRIC))
    for case in cases.test_cases:
        result = metric.compute(
            predictions=case["predictions"], references=case["references"], **case.get("kwargs", {})
        )
        got = {key: round(result[key], 4) if isinstance(result[key], float) else result[key] for key in case["result"]}
        assert got == case["result"], case
        want = compute_ce(case["predictions"], case["references"], **case.get("kwargs", {}))
        assert {key: want[key] for key in case["result"]} == {key: result[key] for key in case["result"]}


FRESH_VENV_SCRIPT = """
import json, sys
try:
    import asarg
    raise SystemExit("asarg is importable: the test would prove nothing")
except ImportError:
    pass
import evaluate
ce = evaluate.load(sys.argv[1])
predictions, references = json.loads(sys.argv[2])
print(json.dumps(ce.compute(predictions=predictions, references=references)))
"""


@pytest.mark.slow
def test_the_folder_loads_in_a_fresh_venv_with_evaluate_alone(tmp_path):
    """`python -m venv` + `pip install evaluate` (what evaluate's datasets and numpy need comes with it; pip's cache
    makes a rerun fast): asarg is not installed there, and the checked-in folder loads and scores by its path."""
    from importlib.metadata import version

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        f"evaluate=={version('evaluate')}",
    ]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip install evaluate failed (PyPI needed): {proc.stderr[-2000:]}"
    predictions = ["Mild cardiomegaly. No pleural effusion.", "Possible left lower lobe pneumonia."]
    references = ["Cardiomegaly with small left pleural effusion.", "Left lower lobe pneumonia."]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [str(python), "-I", "-c", FRESH_VENV_SCRIPT, str(METRIC), json.dumps([predictions, references])]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == json.loads(json.dumps(compute_ce(predictions, references)))
    assert 0 < result["f1_micro"] < 1


# ---- the command ------------------------------------------------------------------------------------------------


def test_dry_run_writes_the_folder_and_lists_its_files(tmp_path, capsys):
    assert main(["org/x", "--dry-run", "--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert {p.name for p in (tmp_path / "x").iterdir()} == FOLDER - {"chexpert_ce.py"} | {"x.py"}
    for name in ("x.py", "clinical_efficacy.py", "README.md", "app.py", "requirements.txt"):
        size = (tmp_path / "x" / name).stat().st_size
        assert re.search(rf"^\s+{size:,d}  {re.escape(name)}$", out, re.MULTILINE), name
    assert "dry run: nothing uploaded" in out
    assert main(["org/x", "--dry-run", "--out", str(tmp_path / "x")]) == 0  # its own earlier build is replaced


def test_upload_creates_the_gradio_space_then_uploads_the_folder(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", self.token, a, k)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(("upload_folder", self.token, (), k)))
    assert main(["org/x", "--out", str(tmp_path / "x"), "--private", "--token", "hf_test"]) == 0
    create, upload = calls
    assert create == (
        "create_repo",
        "hf_test",
        ("org/x",),
        {"repo_type": "space", "space_sdk": "gradio", "exist_ok": True, "private": True},
    )
    assert upload[0:2] == ("upload_folder", "hf_test")
    assert (upload[3]["repo_id"], upload[3]["repo_type"], upload[3]["folder_path"]) == (
        "org/x",
        "space",
        str(tmp_path / "x"),
    )
    assert 'evaluate.load("org/x")' in capsys.readouterr().out


def test_a_failed_upload_says_so(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalTokenNotFoundError

    def no_token(self, *args, **kwargs):
        raise LocalTokenNotFoundError("Token is required (`token=True`), but no token found.")

    monkeypatch.setattr(HfApi, "create_repo", no_token)
    assert main(["org/x", "--out", str(tmp_path / "x")]) == 1
    assert "uploading to the Space org/x failed: Token is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "repo_id, match",
    [
        ("chexpert_ce", "not a Space id"),
        ("org/ce.v2", "not a Space id"),
        ("org/clinical_efficacy", "may not be named 'clinical_efficacy'"),
    ],
)
def test_bad_space_ids_are_clear_errors(repo_id, match, tmp_path, capsys):
    assert main([repo_id, "--dry-run", "--out", str(tmp_path / "x")]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_an_unrelated_out_folder_is_not_replaced(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["org/x", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "not empty and was not built by asarg push-metric" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_checked_in_folder_is_never_the_output(capsys):
    before = {p.name: p.read_bytes() for p in METRIC.iterdir() if p.is_file()}
    assert main(["org/chexpert_ce", "--dry-run", "--out", str(METRIC)]) == 2  # it holds clinical_efficacy.py, too
    assert "is also an input of this command" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in METRIC.iterdir() if p.is_file()} == before
