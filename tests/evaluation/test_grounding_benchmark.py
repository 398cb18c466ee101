"""benchmarks/quality/grounding.py on a tiny model and a handful of SynthCXR studies: it runs end to end and its numbers
are consistent (a smoke test: a tiny untrained model's rankings are noise)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("grounding")


@pytest.fixture(scope="module")
def tiny_synthcxr_model(tmp_path_factory):
    """A tiny ASaRG reading SynthCXR's anatomy channels through a built-in segmenter (live seg columns)."""
    from asarg.processing.synthcxr.generator import ANATOMY_CLASSES
    from asarg.training.tiny import tiny_asarg_config, tiny_processor, tiny_tokenizer
    from modeling_asarg import AsargForConditionalGeneration

    tokenizer = tiny_tokenizer()
    names = list(ANATOMY_CLASSES)
    config = tiny_asarg_config(tokenizer, num_seg_classes=len(names), seg_class_names=names)
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.multi_modal_projector.seg_linear.weight.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tiny_processor(tokenizer, config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_synthcxr(tmp_path_factory):
    from asarg.processing.synthcxr.dataset import write_dataset

    root = tmp_path_factory.mktemp("synthcxr")
    write_dataset(root, 30, seed=3, size=64)  # 3 test studies, 24 training ones
    return root


def test_benchmark_runs_and_its_numbers_are_consistent(benchmark, tiny_synthcxr_model, tiny_synthcxr, tmp_path):
    out = tmp_path / "grounding.json"
    argv = ["--model", tiny_synthcxr_model, "--data", str(tiny_synthcxr), "--n", "3", "--timing-studies", "1"]
    assert benchmark.main([*argv, "--max-new-tokens", "4", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["studies"] == 3 and result["sentences"] > 0
    for key in ("hit_at_1", "hit_at_3", "mrr"):
        assert set(result[key]) == {"model", "random", "fixed"}
        assert all(0 <= v <= 1 for v in result[key].values())
    assert result["hit_at_1"]["random"] <= result["hit_at_3"]["random"]
    per_finding = result["per_finding"]
    assert sum(row["n"] for row in per_finding.values()) >= result["sentences"]
    for row in per_finding.values():
        assert all(0 <= row[k] <= 1 for k in ("model", "random", "fixed"))
    timing = result["timing"]
    assert timing["timed_studies"] == 1 and timing["trace_speedup"] > 0
    assert all(timing[f"{k}_seconds"] > 0 for k in ("trace", "trace_per_row_vision", "first_report", "full_grounding"))


def test_fixed_ranking_orders_groups_by_training_findings(benchmark, tiny_synthcxr):
    from asarg.evaluation.grounding import StructureDrop, score_grounding
    from asarg.processing.synthcxr.dataset import read_manifest
    from modeling_asarg import CXAS_ANATOMY_GROUPS

    train = read_manifest(tiny_synthcxr, "train")
    groups = {"heart": [0], "lungs": [1], "spine": [2]}
    order = benchmark.fixed_order(train, groups)
    counts = Counter(
        g for r in train for f in r["findings"] for g in groups if set(f["location"]) & {g, *CXAS_ANATOMY_GROUPS[g]}
    )
    assert sorted(order) == sorted(groups) and counts[order[0]] > counts[order[-1]]  # not vacuous
    assert [counts[g] for g in order] == sorted(counts[g] for g in groups)[::-1]

    sentence = benchmark.with_ranking([benchmark_trace("Small left pleural effusion.")], ["spine", "lungs", "heart"])
    assert [s.name for s in sentence[0].ranking] == ["spine", "lungs", "heart"]
    assert isinstance(sentence[0].ranking[0], StructureDrop)
    findings = [{"kind": "effusion", "observations": {"Pleural Effusion": 1}, "location": ["left lung base"]}]
    score = score_grounding(sentence, findings, ks=(1,))
    assert score.cases[0]["rank"] == 2  # "lungs" holds the left lung base


def benchmark_trace(text: str):
    from asarg.evaluation.grounding import SentenceTrace

    return SentenceTrace(text, (0, len(text)), 0.0, 1, [])
