"""Recipe arguments that used to be accepted silently or to fail late: typo'd keys (YAML and command line), counts
whose 0 the libraries read as 'no limit', an output_dir that is a file, a resume path that is not a checkpoint, an
unusable image with `strict`. All of them fail before a model is loaded."""

from __future__ import annotations

import pytest
from conftest import REPO

pytest.importorskip("trl")

RECIPE = REPO / "training" / "recipes" / "synthcxr_tiny_cpu.yaml"
SCRIPT = REPO / "training" / "sft_asarg.py"


def parse(sft, *argv):
    return sft.make_parser().parse_args_and_config(list(argv))


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("lerning_rate: 1.0e-3", "learning_rate"), ("use_seg_map: true", "use_seg_maps"), ("max_step: 3", "max_steps")],
)
def test_a_typo_in_the_recipe_names_the_key_and_the_closest_valid_one(sft, tmp_path, typo, suggestion):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text() + typo + "\n")
    key = typo.split(":")[0]
    with pytest.raises(
        ValueError, match=rf"unknown recipe \(YAML\) key\(s\): '{key}' \(did you mean '{suggestion}'\?\)"
    ):
        parse(sft, "--config", str(recipe))


def test_a_typo_on_the_command_line_names_the_key_and_the_closest_valid_one(sft):
    with pytest.raises(
        ValueError, match=r"unknown command-line key\(s\): 'lerning_rate' \(did you mean 'learning_rate'"
    ):
        parse(sft, "--config", str(RECIPE), "--lerning_rate", "1e-3")


def test_a_key_unlike_any_valid_one_is_named_without_a_guess(sft, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.read_text() + "zzqqxx: 1\n")
    with pytest.raises(ValueError, match=r"'zzqqxx'; fix the spelling"):
        parse(sft, "--config", str(recipe))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("--max_steps", "0"), "max_steps=0 would still run a training step"),
        (("--max_train_samples", "0"), r"max_train_samples=0 would use every sample"),
        (("--max_eval_samples", "-1"), r"max_eval_samples=-1 would use every sample"),
    ],
)
def test_zero_counts_are_errors_not_no_limit(sft, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        sft.main(*parse(sft, "--config", str(RECIPE), "--dataset_name", "x", "--output_dir", str(tmp_path), *override))


def test_an_output_dir_that_is_a_file_is_refused_before_loading(sft, tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(ValueError, match=r"output_dir=.*out is a file"):
        sft.main(*parse(sft, "--config", str(RECIPE), "--dataset_name", "x", "--output_dir", str(tmp_path / "out")))


def test_a_resume_path_that_is_not_a_checkpoint_is_refused_before_loading(sft, tmp_path):
    argv = ("--config", str(RECIPE), "--dataset_name", "x", "--output_dir", str(tmp_path))
    with pytest.raises(ValueError, match=r"resume_from_checkpoint=.*nope cannot be resumed from: not a folder"):
        sft.main(*parse(sft, *argv, "--resume_from_checkpoint", str(tmp_path / "nope")))
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(ValueError, match=r"checkpoint-3: trainer_state.json is missing"):
        sft.main(*parse(sft, *argv, "--resume_from_checkpoint", "true"))


def test_strict_makes_an_unusable_image_an_error_naming_it(sft, tmp_path):
    from asarg.processing.synthcxr.dataset import read_manifest, write_dataset

    write_dataset(tmp_path / "synth", n=10, size=64)
    image = tmp_path / "synth" / read_manifest(tmp_path / "synth", "train")[0]["image"]
    image.write_bytes(b"")
    script, _, _ = parse(sft, "--config", str(RECIPE), "--dataset_name", str(tmp_path / "synth"), "--strict", "true")
    with pytest.raises(ValueError, match=rf"empty image file: {image}"):
        sft.load_splits(script, evaluate=False)
    script.strict = False
    train, _ = sft.load_splits(script, evaluate=False)
    assert len(train) == 7  # 8 train studies, the broken one skipped and counted
