"""The fine-tuning recipe seam: `training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml` trains,
saves a model that the Auto classes load and generate with, resumes from its checkpoint, and runs the seg-cache
(segmenter-less) and LoRA arms. The recipe itself runs in subprocesses, as users run it; the arms run its `main()`
in-process because each fresh interpreter pays ~10 s of imports on the 2-core CI machine."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")

RECIPE = REPO / "training" / "recipes" / "synthcxr_tiny_cpu.yaml"
SCRIPT = REPO / "training" / "sft_asarg.py"


def run_recipe(*overrides: str, script: tuple[str, ...] = (str(SCRIPT),)) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    command = [sys.executable, *script, "--config", str(RECIPE), *overrides]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_main(sft, *overrides: str):
    return sft.main(*sft.make_parser().parse_args_and_config(["--config", str(RECIPE), *overrides]))


@pytest.fixture(scope="module")
def trained(synthcxr, tmp_path_factory):
    """The recipe as shipped, run from the installed package, two steps, a checkpoint after each (the first half of
    the resume test, which runs the repository's file)."""
    out = tmp_path_factory.mktemp("sft") / "out"
    overrides = ("--dataset_name", str(synthcxr), "--output_dir", str(out), "--save_steps", "1")
    run_recipe(*overrides, script=("-m", "asarg.training.sft_asarg"))
    return out


def generate(model, processor, image, **seg):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    out = model.generate(**inputs, **seg, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    return out


@pytest.mark.slow
def test_recipe_output_loads_with_auto_classes_and_generates(trained, synthcxr):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(trained, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(trained, trust_remote_code=True)
    assert type(model).__name__ == "AsargForConditionalGeneration"
    assert model.config.use_seg_features and model.config.use_seg_maps and model.config.segmenter_config
    generate(model, processor, Image.open(next((synthcxr / "images").iterdir())))


@pytest.mark.slow
def test_resume_continues_from_the_latest_checkpoint(trained, synthcxr):
    # Mark the step-2 checkpoint's history: a resumed run carries it on, a fresh run (same seed, same losses) not.
    state_file = trained / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["resume_marker"] = 1
    state_file.write_text(json.dumps(state))

    run_recipe(
        "--dataset_name",
        str(synthcxr),
        "--output_dir",
        str(trained),
        "--save_steps",
        "1",
        "--max_steps",
        "3",
        "--resume_from_checkpoint",
        "true",
    )
    resumed = json.loads((trained / "checkpoint-3" / "trainer_state.json").read_text())
    assert resumed["global_step"] == 3
    assert resumed["log_history"][0].get("resume_marker") == 1, "training restarted instead of resuming"
    assert [e["step"] for e in resumed["log_history"] if "loss" in e] == [1, 2, 3]


def test_remove_unused_columns_true_is_rejected(sft, synthcxr, tmp_path):
    with pytest.raises(ValueError, match="remove_unused_columns=True would drop the seg columns"):
        run_main(
            sft, "--dataset_name", str(synthcxr), "--output_dir", str(tmp_path), "--remove_unused_columns", "true"
        )


def test_resume_true_without_checkpoint_is_a_clear_error(sft, synthcxr, tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run_main(
            sft, "--dataset_name", str(synthcxr), "--output_dir", str(tmp_path), "--resume_from_checkpoint", "true"
        )


def test_segmenterless_arm_trains_from_the_seg_cache(sft, synthcxr, tmp_path):
    from transformers import AutoModelForImageTextToText

    out, cache = tmp_path / "out", tmp_path / "cache"
    trainer = run_main(
        sft,
        "--dataset_name",
        str(synthcxr),
        "--output_dir",
        str(out),
        "--segmenter",
        "none",
        "--seg_cache_dir",
        str(cache),
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
    )
    # The model has no segmenter and training mode raises on missing seg inputs, so this step ran on cached ones.
    assert trainer.state.global_step == 1 and trainer.state.log_history[0]["loss"] > 0
    assert len(list(cache.rglob("*.safetensors"))) == 8  # max_train_samples images, one entry each
    model = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True)
    assert model.config.segmenter_config is None and model.model.segmenter is None
    assert json.loads((out / "processor_config.json").read_text()).get("seg_image_size") is None


def test_lora_arm_saves_an_adapter_that_reloads_on_its_base(sft, synthcxr, tmp_path):
    from PIL import Image
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "out"
    run_main(
        sft,
        "--dataset_name",
        str(synthcxr),
        "--output_dir",
        str(out),
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k and "language_model" in k for k in keys)
    assert any("multi_modal_projector" in k for k in keys), "the projector (modules_to_save) was not saved"
    assert not any("lora" in k and ("vision_tower" in k or "segmenter" in k) for k in keys)

    base = AutoModelForImageTextToText.from_pretrained(out / "base_model", trust_remote_code=True)
    model = peft.PeftModel.from_pretrained(base, out).eval()
    generate(model, AutoProcessor.from_pretrained(out), Image.open(next((synthcxr / "images").iterdir())))


def test_lora_target_outside_the_language_model_is_rejected(sft, synthcxr, tmp_path):
    with pytest.raises(ValueError, match="language-model modules only"):
        run_main(
            sft,
            "--dataset_name",
            str(synthcxr),
            "--output_dir",
            str(tmp_path),
            "--use_peft",
            "true",
            "--lora_target_modules",
            r".*\.q_proj",
        )


@pytest.mark.parametrize("recipe", ["llava15_7b_asarg_full", "llava15_7b_asarg_lora"])
def test_paper_scale_recipes_parse(sft, recipe):
    # Only that every key is a known argument: these recipes need GPUs and the Hub, which CI has not (tf32/bf16 are
    # switched off here because their checks need a GPU).
    config = REPO / "training" / "recipes" / f"{recipe}.yaml"
    script, training, model = sft.make_parser().parse_args_and_config(
        ["--config", str(config), "--tf32", "false", "--bf16", "false"]
    )
    assert script.dataset_format == "r2gen" and model.segmenter == "cxas" and not training.remove_unused_columns
    # LoRA, when on, is confined to the language model by a regex and the projector is fully trained.
    lora = trl.get_peft_config(dataclasses.replace(model, use_peft=True))
    assert lora.target_modules.startswith(".*language_model") and lora.modules_to_save == ["multi_modal_projector"]


def test_segmenter_defaults_are_the_model_configs(sft):
    from modeling_asarg import AsargConfig

    args = sft.AsargModelConfig()
    assert (args.num_seg_classes, args.seg_feature_channels) == (
        AsargConfig.num_seg_classes,
        AsargConfig.seg_feature_channels,
    )


@pytest.fixture(scope="module")
def llava_checkpoint(tmp_path_factory):
    """A tiny LLaVA checkpoint (model + LlavaProcessor) on disk, as `llava-hf/llava-1.5-7b-hf` would be."""
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from asarg.training.tiny import tiny_llava_config, tiny_processor, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = tiny_llava_config(tokenizer)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llava")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    template = tiny_processor(tokenizer, config)
    LlavaProcessor(
        image_processor=template.image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=template.chat_template,
    ).save_pretrained(path)
    return path


def test_a_llava_checkpoint_grows_into_asarg_with_the_recipes_segmenter(sft, synthcxr, llava_checkpoint, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "out"
    overrides = ["--model_name_or_path", str(llava_checkpoint), "--use_seg_maps", "false"]
    run_main(sft, "--dataset_name", str(synthcxr), "--output_dir", str(out), "--max_steps", "1", *overrides)
    model = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True)
    assert model.config.use_seg_features and not model.config.use_seg_maps
    # The recipe's small U-Net (num_seg_classes 4, seg_feature_channels 8), not the config's CXAS-sized default.
    assert (model.config.segmenter_config.num_classes, model.config.segmenter_config.feature_channels) == (4, 8)
    assert model.model.multi_modal_projector.seg_linear.in_features == 8  # the seg columns: C = 8 features
