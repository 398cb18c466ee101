"""The literature's CE F1 variants in one table (issue 23): Micro/Macro-F1-14 and -5, uncertain counted negative and
(with "+") positive, each equal to the CE computation under that definition, and named as the papers name them."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import f1_score

from asarg.cli import main
from asarg.evaluation.clinical_efficacy import CE_VARIANTS, compute_ce, format_variants_table
from asarg.evaluation.report_labeler import CHEXPERT_5_LABELS, CHEXPERT_LABELS

PREDICTIONS = [
    "Mild cardiomegaly. No pleural effusion.",
    "Small right pleural effusion and right basilar atelectasis.",
    "No acute cardiopulmonary abnormality.",
    "Possible pneumonia. Possible mild edema. Endotracheal tube in place.",
]
REFERENCES = [
    "Cardiomegaly with small left pleural effusion.",
    "Right pleural effusion. Lungs otherwise clear.",
    "Heart size normal. Lungs are clear.",
    "Right lower lobe pneumonia. Pulmonary edema. Endotracheal tube tip above the carina.",
]
# By hand: positives of each side; the last prediction's pneumonia and edema are uncertain.
PRED_POS = [{"Cardiomegaly"}, {"Pleural Effusion", "Atelectasis"}, {"No Finding"}, {"Support Devices"}]
PRED_UNCERTAIN = [set(), set(), set(), {"Pneumonia", "Edema"}]
REF_POS = [
    {"Cardiomegaly", "Pleural Effusion"},
    {"Pleural Effusion"},
    {"No Finding"},
    {"Pneumonia", "Edema", "Support Devices"},
]


def matrix(rows, names):
    return [[int(n in row) for n in names] for row in rows]


def test_the_eight_variants_are_the_literatures_names():
    names = [v[0] for v in CE_VARIANTS]
    assert names == [f"{a}-F1-{n}{p}" for p in ("", "+") for n in (14, 5) for a in ("Micro", "Macro")]
    for name, labels, uncertain, average, _ in CE_VARIANTS:
        assert name.endswith("+") == (uncertain == "positive") and f"-{labels}" in name
        assert name.lower().startswith(average)


def test_each_variant_equals_sklearn_on_hand_labels():
    result = compute_ce(PREDICTIONS, REFERENCES, variants=True)
    got = {v["name"]: v for v in result["variants"]}
    assert len(got) == 8
    for name, labels, uncertain, average, _ in CE_VARIANTS:
        names = CHEXPERT_LABELS if labels == 14 else CHEXPERT_5_LABELS
        pred = PRED_POS if uncertain == "negative" else [a | b for a, b in zip(PRED_POS, PRED_UNCERTAIN)]
        want = f1_score(matrix(REF_POS, names), matrix(pred, names), average=average, zero_division=0)
        assert got[name]["f1"] == pytest.approx(want), name
        same = compute_ce(PREDICTIONS, REFERENCES, uncertain=uncertain, labels=labels)
        assert got[name]["f1"] == same[f"f1_{average}"] and got[name]["recall"] == same[f"recall_{average}"]
    # Uncertain counted positive turns the hedged pneumonia and edema into hits: the "+" variants are higher here.
    assert got["Micro-F1-14+"]["f1"] > got["Micro-F1-14"]["f1"]
    assert got["Micro-F1-5+"]["f1"] > got["Micro-F1-5"]["f1"]
    # The default definition's own numbers are unchanged by asking for the variants.
    assert result["f1_micro"] == compute_ce(PREDICTIONS, REFERENCES)["f1_micro"] == got["Micro-F1-14"]["f1"]
    assert "variants" not in compute_ce(PREDICTIONS, REFERENCES)


def test_the_table_names_every_variant_and_its_reading():
    variants = compute_ce(PREDICTIONS, REFERENCES, variants=True)["variants"]
    text, markdown = format_variants_table(variants), format_variants_table(variants, markdown=True)
    for v in variants:
        assert v["name"] in text and f"{v['f1']:.4f}" in text
        assert f"| {v['name']} | {v['labels']} | {v['uncertain']} | {v['average']} | {v['f1']:.4f} |" in markdown
    assert "CheXagent" in text and "LLaVA-Rad" in text and "R2Gen" in text


def test_evaluate_variants_prints_one_table_and_writes_them(tmp_path, capsys):
    preds, refs = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    preds.write_text("".join(json.dumps({"report": r}) + "\n" for r in PREDICTIONS), encoding="utf-8")
    refs.write_text("".join(json.dumps({"report": r}) + "\n" for r in REFERENCES), encoding="utf-8")
    out = tmp_path / "scores.json"
    argv = ["evaluate", "--predictions", str(preds), "--references", str(refs), "--variants", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())["variants"]
    assert [v["name"] for v in written] == [v[0] for v in CE_VARIANTS]
    for v in written:
        assert any(line.startswith(v["name"] + " ") and f"{v['f1']:.4f}" in line for line in printed.splitlines())


def test_the_metric_takes_variants(tmp_path):
    evaluate = pytest.importorskip("evaluate")
    from pathlib import Path

    metric = evaluate.load(str(Path(__file__).resolve().parents[2] / "metrics" / "chexpert_ce"))
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES, variants=True)
    assert result["variants"] == compute_ce(PREDICTIONS, REFERENCES, variants=True)["variants"]
