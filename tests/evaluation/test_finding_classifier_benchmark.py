"""benchmarks/quality/finding_classifier.py: the logits it scores are the model's own finding classifier's (finding
tokens, or the linear head), and a model without one is a clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import load_benchmark, xray_like


@pytest.mark.parametrize("tokens", [True, False], ids=["finding-tokens", "linear-head"])
def test_the_logits_are_the_models_own_classifiers(make_asarg, tokens):
    bench = load_benchmark("finding_classifier")
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=tokens)
    images = [xray_like(seed=i) for i in range(3)]
    logits = bench.finding_logits(model, processor, images, batch_size=2)
    inputs = processor(images=images, text=[processor.image_token] * 3, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, finding_labels=torch.zeros(3, 14))
    assert logits.shape == (3, 14) and torch.allclose(torch.as_tensor(logits), out.finding_logits, atol=1e-5)


def test_a_model_without_a_classifier_is_a_clear_error(make_asarg):
    bench = load_benchmark("finding_classifier")
    model, processor = make_asarg()
    with pytest.raises(ValueError, match="no finding classifier"):
        bench.finding_logits(model, processor, [xray_like()])


def test_the_decoding_exploration_applies_its_temperature_and_guidance(make_asarg, synthcxr, tmp_path, monkeypatch):
    """benchmarks/quality/finding_token_decoding.py: the reports come from the checkpoint with the finding tokens at the
    asked temperature and with the asked guidance; they are scored against the validation references and kept."""
    import json

    bench = load_benchmark("finding_token_decoding")
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    seen = {}

    def fake_generate(model, processor, images, batch_size, **options):
        seen.update(temperature=model.config.finding_token_temperature, options=options, n=len(images))
        return ["Small right pleural effusion."] * len(images)

    monkeypatch.setattr(bench, "generate_reports", fake_generate)
    out = tmp_path / "r.json"
    from asarg.processing.synthcxr.dataset import read_manifest

    n = len(read_manifest(synthcxr, "validation"))
    argv = ["--model", str(tmp_path / "model"), "--data", str(synthcxr), "--temperature", "0"]
    result = bench.main([*argv, "--guidance", "2", "--out", str(out)])
    assert seen == {"temperature": 0.0, "options": {"guidance_scale": 2.0}, "n": n} and n >= 1
    assert 0 <= result["f1_micro"] <= 1 and result["distinct"] == 1 / n
    assert json.loads(out.read_text())["reports"] == ["Small right pleural effusion."] * n
