"""Nothing lost, nothing run: every command's output paths, every model-loading path, every `torch.load`.

The sweep runs each command of `asarg` with its output pointed at one of its own inputs, at a non-empty folder it did
not write (hidden file and a training run's `checkpoint-*` included) and at `..`: each must exit 2 with a one-line
message, before any work, and leave every file as it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import xray_like

from asarg.cli import COMMANDS, main
from asarg.processing.checkpoints import CheckpointError, foreign_code, open_checkpoint, write_checksums
from asarg.processing.outputs import OutputError, check_output_dir, claim_run_dir, read_marker

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A scratch working folder (`..` of it holds the inputs) with every kind of input a command reads."""
    root = tmp_path / "world"
    work = root / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    image = root / "film.png"
    xray_like().save(image)
    (root / "reports.csv").write_text("report\nThe heart is normal.\n", encoding="utf-8")
    (root / "refs.csv").write_text("report\nThe heart is normal.\n", encoding="utf-8")
    data = root / "data"
    data.mkdir()
    xray_like().save(data / "a.png")
    (data / "a.txt").write_text("The lungs are clear.", encoding="utf-8")
    checkpoint = root / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}", encoding="utf-8")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(checkpoint / "model.safetensors"))
    write_checksums(checkpoint)
    torch.save({"model": {"w": torch.zeros(1)}}, root / "weights.pth")
    foreign = root / "foreign"
    (foreign / "checkpoint-500").mkdir(parents=True)
    (foreign / "checkpoint-500" / "model.safetensors").write_bytes(b"precious weights")
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    (foreign / ".hidden").write_text("also mine", encoding="utf-8")
    return {"root": root, "image": image, "data": data, "checkpoint": checkpoint, "foreign": foreign}


def command_lines(w: dict, out: str) -> dict[str, list[str]]:
    """Each command with its output at `out` ("{input}" = the command's own main input)."""
    root = w["root"]
    return {
        "generate": ["generate", str(w["image"]), "--model", str(w["checkpoint"]), "--out", out],
        "label": ["label", "--input", str(root / "reports.csv"), "--column", "report", "--output", out],
        "evaluate": ["evaluate", "--predictions", str(root / "reports.csv"), "--references", str(root / "refs.csv")]
        + ["--json", out],
        "convert-cxas": ["convert-cxas", str(root / "weights.pth"), "--out", out],
        "reproduce": ["reproduce", "--quick", "--out", out],
        "synth": ["synth", "--n", "2", "--size", "64", "--out", out],
        "contact-sheet": ["contact-sheet", "--n", "1", "--size", "64", "--out", out],
        "train-segmenter": ["train-segmenter", "--data", str(w["data"]), "--out", out],
        "finetune": ["finetune", str(w["data"]), "--model", str(w["checkpoint"]), "--out", out],
        "build-smollm2": ["build-smollm2", out],
        "push": ["push", str(w["checkpoint"]), "org/x", "--dry-run", "--out", out],
        "push-space": ["push-space", "org/x", "--dry-run", "--out", out],
        "push-metric": ["push-metric", "org/x", "--dry-run", "--out", out],
        # writes nothing locally: a folder (or `..`) where its DICOM files go is refused, before any request
        "send": ["send", "--dicomweb", "http://127.0.0.1:9/dicom-web", out],
        "sft": [
            "sft",
            "--config",
            str(REPO / "training/recipes/synthcxr_tiny_cpu.yaml"),
            "--dataset_name",
            str(w["data"]),
        ]
        + ["--dataset_format", "image-folder", "--model_name_or_path", "tiny", "--output_dir", out],
    }


OWN_INPUT = {  # the input each command must never write over
    "generate": "image",
    "label": "reports.csv",
    "evaluate": "reports.csv",
    "convert-cxas": "weights.pth",
    "train-segmenter": "data",
    "finetune": "data",
    "push": "checkpoint",
}


def test_the_sweep_covers_every_command():
    assert set(
        command_lines({"root": Path("r"), "image": "", "data": "", "checkpoint": "", "foreign": ""}, "o")
    ) == set(COMMANDS)


def _refused(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_at_a_foreign_folder_or_dotdot_is_refused_and_nothing_changes(world, command, capsys):
    before = snapshot(world["root"])
    for out in (str(world["foreign"]), "..", str(world["root"])):
        err = _refused(command_lines(world, out)[command], capsys)
        assert re.search(r"not empty|holds|folder|exists", err), err
    assert snapshot(world["root"]) == before


@pytest.mark.parametrize("command", sorted(OWN_INPUT))
def test_out_at_the_commands_own_input_is_refused(world, command, capsys):
    name = OWN_INPUT[command]
    target = world[name] if name in world else world["root"] / name
    before = snapshot(world["root"])
    err = _refused(command_lines(world, str(target))[command], capsys)
    assert "input" in err or "not empty" in err, err
    assert snapshot(world["root"]) == before


def test_generate_out_equal_to_the_input_image_keeps_the_image(world, capsys):
    image = world["image"]
    data = image.read_bytes()
    err = _refused(["generate", str(image), "--model", str(world["checkpoint"]), "--out", str(image)], capsys)
    assert "input" in err and image.read_bytes() == data


def test_generate_dicom_out_is_checked_like_every_out(world, capsys):
    """`generate --dicom-out DIR`: a foreign folder, `..`, the folder holding the inputs, the input image itself and a
    folder holding an input are refused before the model loads, and nothing changes."""
    before = snapshot(world["root"])
    image, data = world["image"], world["data"]
    argv = ["generate", str(image), str(data / "a.png"), "--model", str(world["checkpoint"]), "--dicom-out"]
    for out in (str(world["foreign"]), "..", str(world["root"]), str(image), str(data)):
        err = _refused([*argv, out], capsys)
        assert re.search(r"not empty|holds|input", err), err
    assert snapshot(world["root"]) == before


def test_existing_output_file_needs_overwrite(world, capsys):
    out = world["root"] / "labels.csv"
    out.write_text("keep me", encoding="utf-8")
    argv = ["label", "--input", str(world["root"] / "reports.csv"), "--column", "report", "--output", str(out)]
    assert "--overwrite" in _refused(argv, capsys)
    assert out.read_text() == "keep me"
    assert main([*argv, "--overwrite"]) == 0
    assert "No Finding" in out.read_text()


def test_push_repo_id_never_becomes_a_path(world, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "keep.txt").write_text("x")
    for repo_id in ("..", "../x", "a/b/c", "org/.."):
        err = _refused(["push", str(world["checkpoint"]), repo_id, "--dry-run"], capsys)
        assert "Repo id" in err or "repo" in err.lower()
    assert (tmp_path / "tmp" / "keep.txt").read_text() == "x"


def test_push_into_its_own_earlier_folder_replaces_it(world, capsys):
    out = world["root"] / "hub"
    argv = ["push", str(world["checkpoint"]), "org/x", "--dry-run", "--out", str(out), "--allow-unverified"]
    assert main(argv) == 0 and read_marker(out)["command"] == "push"
    assert main(argv) == 0  # its own folder: replaced without --overwrite
    capsys.readouterr()


def test_push_refuses_damaged_or_unverifiable_weights(world, capsys):
    checkpoint = world["checkpoint"]
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit inside the tensor data: safetensors cannot see it
    weights.write_bytes(bytes(data))
    manifest = (checkpoint / "checksums.sha256").read_bytes()
    err = _refused(["push", str(checkpoint), "org/x", "--dry-run", "--out", str(world["root"] / "hub")], capsys)
    assert "damaged" in err and (checkpoint / "checksums.sha256").read_bytes() == manifest
    (checkpoint / "checksums.sha256").unlink()
    err = _refused(["push", str(checkpoint), "org/x", "--dry-run", "--out", str(world["root"] / "hub")], capsys)
    assert "--allow-unverified" in err and not (world["root"] / "hub").exists()


def test_a_run_folder_is_resumed_only_by_the_same_run(tmp_path):
    out = tmp_path / "run"
    identity = {"data": "/d/one", "model": "/m/base"}
    claim_run_dir(out, command="finetune", identity=identity)
    (out / "checkpoint-1").mkdir()
    assert claim_run_dir(out, command="finetune", identity=identity) == out.resolve()  # the same run resumes
    with pytest.raises(OutputError, match=r"/d/one.*/d/two"):
        claim_run_dir(out, command="finetune", identity={**identity, "data": "/d/two"})
    with pytest.raises(OutputError, match="not empty and was not built by asarg train-segmenter"):
        check_output_dir(out, command="train-segmenter")
    assert (out / "checkpoint-1").is_dir()


def test_finetune_into_a_run_of_other_data_names_both(world, capsys):
    out = world["root"] / "run"
    other = world["root"] / "other-data"
    other.mkdir()
    (other / "b.txt").write_text("x")
    claim_run_dir(out, command="finetune", identity={"data": str(other.resolve())})
    argv = ["finetune", str(world["data"]), "--model", str(world["checkpoint"]), "--out", str(out)]
    err = _refused(argv, capsys)
    assert str(other.resolve()) in err and str(world["data"].resolve()) in err


# ---- foreign code ---------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(make_asarg, tmp_path):
    model, processor = make_asarg()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_folder_with_the_installed_code_loads_without_trust(saved):
    assert foreign_code(saved) == []  # save_pretrained copied the installed Hub files
    model, processor = open_checkpoint(saved)
    assert type(model).__module__.startswith("modeling_asarg")


def _with_sentinel(folder: Path, sentinel: Path) -> None:
    code = folder / "modeling_asarg.py"
    code.write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n" + code.read_text(encoding="utf-8"))


def _foreign_model(folder: Path) -> None:
    """Not an ASaRG checkpoint: another model type whose auto_map points at the folder's own code."""
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "someone-elses-vlm"
    config["auto_map"] = {"AutoConfig": "modeling_asarg.EvilConfig", "AutoModel": "modeling_asarg.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))


def test_an_asarg_folder_with_edited_code_loads_with_the_installed_classes_and_runs_nothing(
    saved, tmp_path, capsys, caplog
):
    sentinel = tmp_path / "ran.txt"
    _with_sentinel(saved, sentinel)
    write_checksums(saved)
    assert foreign_code(saved) == ["modeling_asarg.py"]
    with caplog.at_level("WARNING"):
        model, _ = open_checkpoint(saved)
    assert type(model).__module__ == "modeling_asarg.modeling_asarg" and "is not run" in caplog.text
    image = tmp_path / "film.png"
    xray_like().save(image)
    assert main(["generate", str(image), "--model", str(saved), "--max-new-tokens", "2"]) in (0, 1)
    assert not sentinel.exists()


def test_a_foreign_model_with_its_own_code_is_refused_without_consent(saved, tmp_path, capsys, monkeypatch):
    sentinel = tmp_path / "ran.txt"
    _with_sentinel(saved, sentinel)
    _foreign_model(saved)
    with pytest.raises(CheckpointError, match="--trust-remote-code"):
        open_checkpoint(saved)
    image = tmp_path / "film.png"
    xray_like().save(image)
    err = _refused(["generate", str(image), "--model", str(saved)], capsys)
    assert "modeling_asarg.py" in err
    monkeypatch.syspath_prepend(str(REPO / "spaces_demo"))
    import engine

    monkeypatch.delenv(engine.TRUST_ENV, raising=False)
    with pytest.raises(CheckpointError, match="ASARG_TRUST_REMOTE_CODE"):
        engine.Engine.load(str(saved))
    assert not sentinel.exists()


def test_every_model_loading_path_refuses_foreign_code(saved, tmp_path, capsys):
    """The sweep over the loaders: open_checkpoint / load_model (generate, the Space, benchmarks), the training
    recipe's model set-up (finetune, sft, reproduce) and the command line."""
    import dataclasses

    from asarg.processing.checkpoints import load_model
    from asarg.processing.inference import load_for_generation
    from asarg.training import model_setup
    from asarg.training.sft_asarg import AsargModelConfig

    sentinel = tmp_path / "ran.txt"
    _with_sentinel(saved, sentinel)
    _foreign_model(saved)
    loaders = {
        "load_model": lambda: load_model(saved),
        "open_checkpoint": lambda: open_checkpoint(saved),
        "load_for_generation": lambda: load_for_generation(str(saved)),
        "training set-up": lambda: model_setup.load_model(
            dataclasses.replace(AsargModelConfig(), model_name_or_path=str(saved))
        ),
    }
    for name, load in loaders.items():
        with pytest.raises((CheckpointError, ValueError)):
            load()
        assert not sentinel.exists(), name
    data = tmp_path / "data"
    data.mkdir()
    xray_like().save(data / "a.png")
    (data / "a.txt").write_text("Clear.")
    _refused(["finetune", str(data), "--model", str(saved), "--out", str(tmp_path / "run")], capsys)
    assert not sentinel.exists()


def test_every_torch_load_is_weights_only():
    """A grep, so a new `torch.load` cannot slip in: every call in the project's code passes weights_only=True."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part in {".venv", "tests", ".git"} for part in path.relative_to(REPO).parts):
            continue
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert not offenders, offenders


def missing_input_lines(root: Path) -> dict[str, list[str]]:
    """Each command that reads an input, given one that does not exist."""
    gone = str(root / "no-such-input")
    return {
        "generate": ["generate", gone + ".png"],
        "label": ["label", "--input", gone + ".csv", "--output", str(root / "o.csv")],
        "evaluate": ["evaluate", "--predictions", gone + ".csv", "--references", gone + ".csv"],
        "convert-cxas": ["convert-cxas", gone + ".pth", "--out", str(root / "o")],
        "train-segmenter": ["train-segmenter", "--data", gone, "--out", str(root / "o")],
        "finetune": ["finetune", gone, "--model", "tiny", "--out", str(root / "o")],
        "build-smollm2": ["build-smollm2", str(root / "o"), "--from", gone],
        "push": ["push", gone, "org/x", "--dry-run"],
        "send": ["send", "--dicomweb", "http://127.0.0.1:9/dicom-web", gone + ".dcm"],
        "sft": ["sft", "--config", gone + ".yaml"],
    }


@pytest.mark.parametrize("command", sorted(missing_input_lines(Path("."))))
def test_a_missing_input_is_named_in_one_line_with_exit_2(tmp_path, command, capsys):
    err = _refused(missing_input_lines(tmp_path)[command], capsys)
    assert "no-such-input" in err
