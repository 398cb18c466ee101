"""Hub export: save_pretrained writes three flat files + auto_map; a fresh process without this package loads them
with trust_remote_code and generates the same tokens. The Hub files import nothing of this repository."""

from __future__ import annotations

import ast
import filecmp
import json
import sys

import torch
from conftest import REPO, prompt_for, xray_like
from fresh_process import generate_in_fresh_process

from asarg.processing.models import REMOTE_CODE

# Every Hub file, the model's siblings (cxas_asarg, segmenter_asarg) included: transformers copies the relative imports
# of a remote-code module along with it, and the fresh-process test below loads from exactly these.
HUB_FILES = REMOTE_CODE
ALLOWED_TOP_LEVEL = {"torch", "transformers", "numpy", "PIL"} | set(sys.stdlib_module_names)


def test_hub_files_import_only_allowed_modules():
    package = REPO / "modeling_asarg"
    for name in HUB_FILES:
        tree = ast.parse((package / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
                assert roots <= ALLOWED_TOP_LEVEL, f"{name}: import {roots - ALLOWED_TOP_LEVEL}"
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only `from .sibling import x`, sibling in the same flat folder
                    assert node.level == 1 and node.module, f"{name}: use `from .sibling import name`"
                    assert (package / f"{node.module}.py").name in HUB_FILES, f"{name}: .{node.module}"
                else:
                    root = node.module.split(".")[0]
                    assert root in ALLOWED_TOP_LEVEL, f"{name}: from {node.module} import ..."


def test_save_pretrained_then_fresh_process_loads_with_trust_remote_code(make_asarg, tmp_path):
    model, processor = make_asarg(live_seg=True)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    for name in HUB_FILES:
        assert filecmp.cmp(folder / name, REPO / "modeling_asarg" / name, shallow=False), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "asarg"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_asarg.AsargConfig",
        "AutoModel": "modeling_asarg.AsargForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_asarg.AsargForConditionalGeneration",
    }
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_asarg.AsargProcessor"

    prompt = prompt_for(processor)
    expected = model.generate(**processor(images=xray_like(), text=prompt, return_tensors="pt"), max_new_tokens=6)
    result = generate_in_fresh_process(folder, prompt, tmp_path)
    assert result["module"].startswith("transformers_modules")
    assert (result["config"], result["model"], result["owner"], result["base"], result["processor"]) == (
        "AsargConfig",
        "AsargForConditionalGeneration",
        "AsargForConditionalGeneration",
        "AsargModel",
        "AsargProcessor",
    )
    assert result["owner_tokens"] == expected.tolist()  # AutoModel (the owner's line) writes the same report
    assert "seg_pixel_values" in result["inputs"]
    assert result["tokens"] == expected.tolist()


def test_local_auto_classes_resolve_to_the_package(make_asarg, tmp_path):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    model, processor = make_asarg()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(loaded).__module__ == "modeling_asarg.modeling_asarg"
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "AsargForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(tmp_path)).__name__ == "AsargProcessor"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
