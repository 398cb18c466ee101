"""CXAS-compatible segmenter: config (feature level, class subsets and groups), model-side class selection, and the
converter's contract (weights-only reading, every key accounted for, safetensors out, full ASaRG checkpoints)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import prompt_for, xray_like
from safetensors import safe_open
from transformers import LlavaForConditionalGeneration, LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from asarg.convert_cxas import main
from asarg.training.tiny import tiny_asarg_config, tiny_llava_config
from modeling_asarg import (
    CXAS_ANATOMY_GROUPS,
    CXAS_CLASS_NAMES,
    AsargConfig,
    AsargForConditionalGeneration,
    AsargProcessor,
    build_segmenter,
    cxas_seg_config,
    cxas_segmenter_config,
)
from modeling_asarg.convert_cxas_weights import (
    SEGMENTER_WEIGHTS,
    convert_state_dict,
    load_checkpoint,
    map_cxas_key,
)
from modeling_asarg.processing_asarg import DEFAULT_CHAT_TEMPLATE

# ---- config ----------------------------------------------------------------------------------------------------------


def test_cxas_config_defaults_to_network_features_and_all_159_classes():
    config = AsargConfig(use_seg_maps=True, use_seg_features=True, **cxas_seg_config())
    seg = config.segmenter_config
    assert seg.architecture == "cxas_unet_resnet50" and seg.image_size == 512
    assert seg.feature_level == "feats" and config.seg_feature_channels == 128
    assert config.num_seg_classes == 159 and config.seg_class_names == list(CXAS_CLASS_NAMES)
    assert config.seg_input_width == 128 + 159


def test_class_subset_groups_and_feature_level_are_config_choices(tmp_path):
    subset = AsargConfig(**cxas_seg_config(classes=["lung", "heart", 28], feature_level="feats_3_map"))
    assert subset.seg_class_indices == [134, 121, 28] and subset.num_seg_classes == 3
    assert subset.seg_class_names == ["lung", "heart", "rib_cartilage"]
    assert subset.seg_feature_channels == 512 and subset.segmenter_config.num_classes == 159

    groups = AsargConfig(**cxas_seg_config(groups="anatomy"))
    assert groups.seg_class_names == list(CXAS_ANATOMY_GROUPS) and groups.num_seg_classes == len(CXAS_ANATOMY_GROUPS)
    assert groups.seg_class_groups[groups.seg_class_names.index("heart")] == list(range(121, 127))
    groups.save_pretrained(tmp_path)
    reloaded = AsargConfig.from_pretrained(tmp_path)
    assert reloaded.seg_class_groups == groups.seg_class_groups and reloaded.seg_class_names == groups.seg_class_names
    assert reloaded.seg_class_selection[0] == list(range(28))  # "spine", the first group


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown class name 'lungs'"):
        cxas_seg_config(classes=["lungs"])
    with pytest.raises(ValueError, match="feature_level"):
        cxas_segmenter_config("layer9")
    bad = {**cxas_segmenter_config().to_settings(), "feature_channels": 64}
    with pytest.raises(ValueError, match="has 128 channels"):
        AsargConfig(seg_feature_channels=64, segmenter_config=bad)
    with pytest.raises(ValueError, match=r"channels \[200\]"):
        AsargConfig(segmenter_config=cxas_segmenter_config(), seg_class_indices=[0, 200])
    with pytest.raises(ValueError, match="not both"):
        AsargConfig(seg_class_indices=[0], seg_class_groups=[[1]])
    with pytest.raises(ValueError, match="seg_class_indices"):  # the old message now points at the selection fields
        AsargConfig(num_seg_classes=4, segmenter_config=cxas_segmenter_config())


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_model_selects_and_groups_segmenter_maps_at_full_resolution(tokenizer, reduction):
    base = tiny_asarg_config(tokenizer, seg_map_activation="sigmoid")
    groups = {"num_seg_classes": 2, "seg_class_names": ["left", "right"], "seg_class_groups": [[0, 1], [3]]}
    config = AsargConfig.from_llava_config(base, **groups, seg_group_reduction=reduction)
    assert config.seg_class_names == ["left", "right"] and config.segmenter_config.num_classes == 4
    model = AsargForConditionalGeneration(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    maps = model.model.run_segmenter(pixels)["maps"]
    full = model.model.segmenter(pixels)["logits"].sigmoid()
    reduce = torch.amax if reduction == "max" else torch.mean
    assert maps.shape == (2, 2, 32, 32)
    assert torch.allclose(maps[:, 0], reduce(full[:, [0, 1]], dim=1)) and torch.allclose(maps[:, 1], full[:, 3])


def test_feature_level_selects_the_returned_map():
    segmenter = build_segmenter(cxas_segmenter_config("up2")).eval()
    with torch.no_grad():
        out = segmenter(torch.randn(1, 3, 64, 64))
    assert out["features"].shape == (1, 256, 8, 8) and out["logits"].shape == (1, 159, 64, 64)


# ---- converter -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta_state_dict():
    """CXAS's names and shapes, without allocating 73M parameters."""
    with torch.device("meta"):
        segmenter = build_segmenter(cxas_segmenter_config())
    return segmenter, segmenter.state_dict()


def test_key_mapping_is_explicit():
    assert map_cxas_key("module.backbone.backbone.layer0.0.weight") == "backbone.backbone.layer0.0.weight"
    assert map_cxas_key("model.backbone.layer3.1.conv2.weight") == "backbone.backbone.layer3.1.conv2.weight"
    assert map_cxas_key("head.up1.conv1.conv.0.weight") == "head.up1.conv1.conv.0.weight"
    assert map_cxas_key("backbone.avgpool.weight") == "backbone.avgpool.weight"  # not an encoder stage: unchanged


def test_every_unmatched_key_is_reported(meta_state_dict):
    segmenter, state = meta_state_dict
    assert set(convert_state_dict(state, segmenter)) == set(state)
    broken = dict(state)
    del broken["head.up2.conv.double_conv.1.running_var"]
    broken["head.extra.weight"] = torch.empty(3, device="meta")
    broken["head.out.conv.weight"] = torch.empty(14, 128, 1, 1, device="meta")
    with pytest.raises(ValueError) as error:
        convert_state_dict(broken, segmenter)
    message = str(error.value)
    assert "1 missing: ['head.up2.conv.double_conv.1.running_var']" in message
    assert "1 unexpected: ['head.extra.weight']" in message
    assert "head.out.conv.weight: checkpoint (14, 128, 1, 1) vs segmenter (159, 128, 1, 1)" in message


def test_pth_files_are_read_weights_only(tmp_path, capsys):
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(tmp_path / "pickled.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(tmp_path / "notes.pth")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pth")
    assert main([str(tmp_path / "other.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "no classifier" in capsys.readouterr().err
    assert not (tmp_path / "out" / SEGMENTER_WEIGHTS).exists()


def _tiny_llava_dir(tokenizer, path):
    torch.manual_seed(0)
    LlavaForConditionalGeneration(tiny_llava_config(tokenizer)).save_pretrained(path)
    LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=DEFAULT_CHAT_TEMPLATE,
    ).save_pretrained(path)
    return path


def test_convert_cli_writes_a_full_asarg_checkpoint(tokenizer, tmp_path):
    torch.manual_seed(0)
    source = build_segmenter(cxas_segmenter_config())
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "cxas.pth")
    llava = _tiny_llava_dir(tokenizer, tmp_path / "llava")
    out = tmp_path / "asarg"
    from asarg.cli import main as asarg_cli

    assert asarg_cli(["convert-cxas", str(tmp_path / "cxas.pth"), "--out", str(out), "--llava", str(llava)]) == 0

    segmenter_config = json.loads((out / "segmenter_config.json").read_text())
    assert (
        segmenter_config["class_names"] == list(CXAS_CLASS_NAMES) and len(segmenter_config["source"]["sha256"]) == 64
    )
    with safe_open(str(out / SEGMENTER_WEIGHTS), "pt") as f:
        assert set(f.keys()) == set(source.state_dict())
    model = AsargForConditionalGeneration.from_pretrained(out).eval()
    assert model.config.segmenter_config.architecture == "cxas_unet_resnet50"
    assert model.config.num_seg_classes == 159 and model.config.seg_input_width == 128 + 159
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.model.segmenter.state_dict()[name], tensor), name

    processor = AsargProcessor.from_pretrained(out)
    assert processor.seg_image_size == 512 and processor.num_seg_classes == 159
    inputs = processor(images=[xray_like()], text=[prompt_for(processor)], return_tensors="pt")
    assert inputs["seg_pixel_values"].shape == (1, 3, 512, 512)
