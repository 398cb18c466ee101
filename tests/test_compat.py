"""Library internals have one home (`asarg.processing.compat`, plus the two documented ones in the Hub files), and
each one still exists and still behaves as the package assumes: a library release that moves one fails here, by
name, instead of deep inside training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("modeling_asarg", "processing", "training", "evaluation", "experiments", "asarg", "spaces_demo")
INTERNAL = re.compile(
    r"\bfrom (trl\.trainer|peft\.tuners|transformers\.configuration_utils)[\w.]* import|\._actions\b"
)
ALLOWED = {"processing/compat.py", "modeling_asarg/configuration_asarg.py"}


def test_library_internals_are_imported_in_one_place_only():
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative not in ALLOWED and INTERNAL.search(path.read_text()):
                found.append(relative)
    assert not found, f"library internals imported outside asarg.processing.compat: {found}"


def test_trl_collator_still_builds_a_vision_language_batch(make_asarg):
    from conftest import xray_like

    from asarg.processing.compat import DataCollatorForVisionLanguageModeling

    _, processor = make_asarg()
    collate = DataCollatorForVisionLanguageModeling(processor)
    example = {
        "images": [xray_like()],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "No acute findings."}]},
        ],
    }
    batch = collate([example])
    assert {"input_ids", "labels", "pixel_values"} <= set(batch)


def test_peft_matcher_reads_regex_and_name_lists():
    pytest.importorskip("peft")
    from peft import LoraConfig

    from asarg.processing.compat import lora_target_matches

    regex = LoraConfig(target_modules=r".*language_model.*\.(q_proj|v_proj)")
    assert lora_target_matches(regex, "model.language_model.layers.0.self_attn.q_proj")
    assert not lora_target_matches(regex, "model.vision_tower.encoder.layers.0.self_attn.q_proj")
    names = LoraConfig(target_modules=["q_proj"])
    assert lora_target_matches(names, "model.vision_tower.encoder.layers.0.self_attn.q_proj")
    assert not lora_target_matches(names, "model.language_model.layers.0.mlp.up_proj")
