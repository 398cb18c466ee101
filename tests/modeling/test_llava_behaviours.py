"""With seg off, ASaRG keeps LLaVA's behaviours: each test compares it with a LlavaForConditionalGeneration built from
the same tiny config (and, where weights matter, holding the same weights)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import prompt_for, xray_like
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_hub_export import generate_in_fresh_process
from transformers import LlavaForConditionalGeneration

from asarg.training.tiny import tiny_asarg_config, tiny_llava_config, tiny_processor
from modeling_asarg import AsargForConditionalGeneration, AsargModel


@pytest.fixture
def llava(tokenizer):
    torch.manual_seed(5)
    return LlavaForConditionalGeneration(tiny_llava_config(tokenizer)).eval()


@pytest.fixture
def seg_off(tokenizer, llava):
    """ASaRG with seg off, holding the LLaVA model's weights, and its processor."""
    config = tiny_asarg_config(tokenizer, use_seg_features=False, use_seg_maps=False, builtin_segmenter=False)
    model = AsargForConditionalGeneration(config).eval()
    model.load_state_dict(llava.state_dict(), strict=True)
    return model, tiny_processor(tokenizer, config)


def _inputs(processor):
    return processor(images=[xray_like()], text=[prompt_for(processor)], return_tensors="pt")


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture
def grown_from_llava_checkpoint(llava, seg_off, tmp_path):
    """`AsargForConditionalGeneration.from_pretrained` on a folder written by `LlavaForConditionalGeneration`."""
    llava.save_pretrained(tmp_path / "llava")
    with safe_open(str(tmp_path / "llava" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("language_model.") for k in f.keys()), "expected LLaVA's legacy key layout on disk"
    model, info = AsargForConditionalGeneration.from_pretrained(tmp_path / "llava", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval(), seg_off[1]


def test_from_pretrained_on_a_llava_checkpoint_loads_every_weight(llava, grown_from_llava_checkpoint, tmp_path):
    model, processor = grown_from_llava_checkpoint
    assert type(model) is AsargForConditionalGeneration and model.config.seg_input_width == 0
    with pytest.raises(ValueError, match="from_llava"):  # the base model cannot take LLaVA's head: pointed there
        AsargModel.from_pretrained(tmp_path / "llava")
    inputs = _inputs(processor)
    assert torch.allclose(_logits(model, inputs), _logits(llava, inputs), atol=1e-6)


def test_a_model_grown_from_a_llava_checkpoint_saves_asarg_names_and_reloads(
    llava, grown_from_llava_checkpoint, tmp_path
):
    model, processor = grown_from_llava_checkpoint
    model.save_pretrained(tmp_path / "asarg")
    with safe_open(str(tmp_path / "asarg" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(model.state_dict()), "saved under other names than ASaRG's own"
    reloaded, info = AsargForConditionalGeneration.from_pretrained(tmp_path / "asarg", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = _inputs(processor)
    assert torch.allclose(_logits(reloaded.eval(), inputs), _logits(llava, inputs), atol=1e-6)


@pytest.mark.slow
def test_a_model_grown_from_a_llava_checkpoint_reloads_with_trust_remote_code(
    llava, grown_from_llava_checkpoint, tmp_path
):
    model, processor = grown_from_llava_checkpoint
    model.save_pretrained(tmp_path / "asarg")
    processor.save_pretrained(tmp_path / "asarg")
    prompt = prompt_for(processor)
    expected = llava.generate(**processor(images=xray_like(), text=prompt, return_tensors="pt"), max_new_tokens=6)
    result = generate_in_fresh_process(tmp_path / "asarg", prompt, tmp_path)
    assert result["model"] == "AsargForConditionalGeneration" and result["module"].startswith("transformers_modules")
    assert result["tokens"] == expected.tolist()


def test_get_image_features_returns_a_tuple_like_llava(llava, seg_off):
    model, processor = seg_off
    pixel_values = _inputs(processor)["pixel_values"]
    with torch.no_grad():
        theirs = llava.get_image_features(pixel_values, return_dict=False)
        for ours in (
            model.get_image_features(pixel_values, return_dict=False),
            model.model.get_image_features(pixel_values, return_dict=False),
        ):
            assert isinstance(ours, tuple) and len(ours) == len(theirs)
            assert torch.allclose(ours[0], theirs[0])  # the vision tower's last hidden state
            assert all(torch.allclose(a, b) for a, b in zip(ours[1], theirs[1], strict=True))  # projected, per image


def test_a_config_asking_for_gradient_checkpointing_turns_it_on(tokenizer, tmp_path):
    llava_config = tiny_llava_config(tokenizer)
    llava_config.gradient_checkpointing = True
    assert LlavaForConditionalGeneration(llava_config).is_gradient_checkpointing  # what LLaVA does

    config = tiny_asarg_config(tokenizer, builtin_segmenter=False)
    AsargForConditionalGeneration(config).save_pretrained(tmp_path)
    config.gradient_checkpointing = True
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["gradient_checkpointing"] is True
    model = AsargForConditionalGeneration.from_pretrained(tmp_path)
    assert model.is_gradient_checkpointing and model.model.language_model.gradient_checkpointing


def test_output_attentions_gives_the_vision_attentions_as_llava(llava, seg_off):
    model, processor = seg_off
    for each in (llava, model):
        each.set_attn_implementation("eager")  # sdpa cannot return attention weights
    inputs = _inputs(processor)
    with torch.no_grad():
        theirs = llava(**inputs, output_attentions=True)
        ours = model(**inputs, output_attentions=True)
    vision_layers = llava.config.vision_config.num_hidden_layers
    assert len(theirs.image_outputs.attentions) == len(ours.image_outputs.attentions) == vision_layers
    for a, b in zip(ours.image_outputs.attentions, theirs.image_outputs.attentions, strict=True):
        assert torch.allclose(a, b)
    assert len(ours.attentions) == len(theirs.attentions)  # and the language model's


def test_weights_missing_from_a_checkpoint_get_their_construction_init(tokenizer, tmp_path):
    """CLIP sets the std of its attention and MLP weights from its parameter-less blocks: transformers skips those for
    custom code, unless the model says (`is_custom_code`) that its init goes through `transformers.initialization`."""
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(tiny_asarg_config(tokenizer, builtin_segmenter=False))
    missing = [
        "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight",
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight",
    ]
    seg_columns = "model.multi_modal_projector.seg_linear.weight"
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in state.items() if k not in {*missing, seg_columns}}
    save_file(kept, tmp_path / "model.safetensors", {"format": "pt"})
    loaded, info = AsargForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {*missing, seg_columns}
    for name in missing:
        built, got = model.get_parameter(name).std().item(), loaded.get_parameter(name).std().item()
        assert abs(got / built - 1) < 0.2, (
            f"{name}: std {got:.3f} after from_pretrained, {built:.3f} on construction. transformers' "
            "initialize_weights skipped the parameter-less CLIP blocks (its custom-code path): check that "
            "AsargPreTrainedModel.is_custom_code still takes effect in PreTrainedModel.initialize_weights."
        )
    assert loaded.get_parameter(seg_columns).abs().max() == 0, "missing seg columns must start at zero"
