"""The CE metric: numbers equal a hand computation with sklearn; the evaluate module loads offline in a fresh
process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from asarg.evaluation.clinical_efficacy import binarize, ce_scores, compute_ce
from asarg.evaluation.report_labeler import CHEXPERT_5_LABELS, CHEXPERT_LABELS, label_reports

REPO = Path(__file__).resolve().parents[2]
METRIC = REPO / "metrics" / "chexpert_ce"

PREDICTIONS = [
    "Mild cardiomegaly. No pleural effusion.",
    "Small right pleural effusion and right basilar atelectasis.",
    "No acute cardiopulmonary abnormality.",
    "Possible pneumonia. Endotracheal tube in place.",
]
REFERENCES = [
    "Cardiomegaly with small left pleural effusion.",
    "Right pleural effusion. Lungs otherwise clear.",
    "Heart size normal. Lungs are clear.",
    "Right lower lobe pneumonia. Endotracheal tube tip above the carina.",
]
# Positives (value 1) read by hand from the sentences above; "possible pneumonia" is uncertain (-1).
PRED_POS = [{"Cardiomegaly"}, {"Pleural Effusion", "Atelectasis"}, {"No Finding"}, {"Support Devices"}]
PRED_UNCERTAIN = [set(), set(), set(), {"Pneumonia"}]
REF_POS = [
    {"Cardiomegaly", "Pleural Effusion"},
    {"Pleural Effusion"},
    {"No Finding"},
    {"Pneumonia", "Support Devices"},
]


def matrix(rows, names=CHEXPERT_LABELS):
    return np.array([[int(n in row) for n in names] for row in rows])


def sklearn_scores(ref, pred):
    out = {}
    for avg, key in (("micro", "micro"), ("macro", "macro"), ("samples", "example")):
        p, r, f, _ = precision_recall_fscore_support(ref, pred, average=avg, zero_division=0)
        out.update({f"precision_{key}": p, f"recall_{key}": r, f"f1_{key}": f})
    return out


def test_fixture_labels_are_the_hand_labels():
    pred = label_reports(PREDICTIONS)
    ref = label_reports(REFERENCES)
    assert (binarize(pred) == matrix(PRED_POS)).all()
    assert (binarize(ref) == matrix(REF_POS)).all()
    unc = [{n for n, v in zip(CHEXPERT_LABELS, row, strict=True) if v == -1} for row in pred]
    assert unc == PRED_UNCERTAIN


@pytest.mark.parametrize(
    "uncertain, labels",
    [("negative", 14), ("positive", 14), ("negative", 5), ("positive", 5)],
)
def test_scores_equal_sklearn_on_the_hand_labels(uncertain, labels):
    names = CHEXPERT_LABELS if labels == 14 else CHEXPERT_5_LABELS
    pred_rows = PRED_POS if uncertain == "negative" else [a | b for a, b in zip(PRED_POS, PRED_UNCERTAIN, strict=True)]
    pred, ref = matrix(pred_rows, names), matrix(REF_POS, names)
    result = compute_ce(PREDICTIONS, REFERENCES, uncertain=uncertain, labels=labels)
    for key, want in sklearn_scores(ref, pred).items():
        assert result[key] == pytest.approx(want), key
    p, r, f, support = precision_recall_fscore_support(ref, pred, average=None, zero_division=0)
    for j, name in enumerate(names):
        s = result["per_label"][name]
        assert (s["precision"], s["recall"], s["f1"], s["support"]) == pytest.approx((p[j], r[j], f[j], support[j]))
    assert list(result["per_label"]) == list(names)


def test_hand_numbers_of_the_default_definition():
    # Micro over 14 labels: TP = Cardiomegaly, Effusion (report 1), No Finding, Support Devices = 4;
    # FP = Atelectasis = 1; FN = Effusion (report 0), Pneumonia = 2 -> P 4/5, R 4/6, F1 8/11.
    result = compute_ce(PREDICTIONS, REFERENCES)
    assert (result["precision_micro"], result["recall_micro"], result["f1_micro"]) == pytest.approx(
        (4 / 5, 4 / 6, 8 / 11)
    )
    # Example-based F1 per report: 2/3, 2/3, 1, 2/3 -> mean 0.75.
    assert result["f1_example"] == pytest.approx(0.75)


def test_definition_is_echoed():
    result = compute_ce(PREDICTIONS, REFERENCES, uncertain="positive", labels=5)
    assert result["definition_args"]["uncertain"] == "positive" and result["definition_args"]["labels"] == 5
    assert "5 CheXpert labels" in result["definition"] and "-1 (uncertain)" in result["definition"]
    assert "R2Gen convention" in compute_ce(PREDICTIONS, REFERENCES)["definition"]


def test_example_based_scores_a_report_without_positives_as_zero():
    zero = np.zeros((2, 3), dtype=int)
    pred = np.array([[1, 0, 0], [0, 0, 0]])
    assert ce_scores(pred, np.array([[1, 0, 0], [0, 0, 0]]), "abc")["f1_example"] == 0.5
    assert ce_scores(zero, zero, "abc")["f1_micro"] == 0.0


@pytest.mark.parametrize(
    "predictions, references, match",
    [
        (["a", "b"], ["a"], "2 predictions but 1 references"),
        (["a", None], ["a", "b"], r"predictions\[1\]` is NoneType"),
        (["a", "b"], ["a", 7], r"references\[1\]` is int"),
        ("a single string", ["a"], "must be a list"),
        ([], [], "No reports given"),
    ],
)
def test_bad_inputs_raise_clear_errors(predictions, references, match):
    with pytest.raises(ValueError, match=match):
        compute_ce(predictions, references)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"uncertain": "maybe"}, "uncertain="), ({"labels": 13}, "labels="), ({"labeler": "negbio"}, "labeler=")],
)
def test_bad_definitions_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_ce(PREDICTIONS, REFERENCES, **kwargs)


def test_metric_folder_follows_the_evaluate_layout():
    for name in ("chexpert_ce.py", "README.md", "app.py", "requirements.txt"):
        assert (METRIC / name).is_file(), name
    card = (METRIC / "README.md").read_text()
    assert card.startswith("---\n") and "tags:" in card and "app_file: app.py" in card


@pytest.mark.slow
def test_evaluate_load_offline_in_a_fresh_process(tmp_path):
    code = f"""
import doctest, json, sys
import evaluate
metric = evaluate.load({str(METRIC)!r})
result = metric.compute(predictions={PREDICTIONS!r}, references={REFERENCES!r}, uncertain="positive")
bad = None
try:
    metric.compute(predictions=["a", None], references=["a", "b"])
except ValueError as err:
    bad = str(err)
doctest.testmod(sys.modules[type(metric).__module__], raise_on_error=True, extraglobs={{"evaluate": evaluate}})
print(json.dumps({{"result": result, "bad": bad}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = compute_ce(PREDICTIONS, REFERENCES, uncertain="positive")
    for key in ("f1_micro", "f1_macro", "f1_example", "precision_micro", "recall_macro"):
        assert out["result"][key] == pytest.approx(expected[key])
    assert out["result"]["definition"] == expected["definition"]
    assert "predictions[1]" in out["bad"]


# ---- reports the labeler cannot read; bad entries through the metric's add_batch / add ----------------------------


def test_reports_the_labeler_cannot_read_are_counted_and_warned_about(caplog):
    """'心脏增大。' (cardiomegaly) vs '心脏无增大。' (no cardiomegaly) scored CE-F1 1.0 without a word."""
    with caplog.at_level("WARNING", logger="asarg.evaluation.clinical_efficacy"):
        result = compute_ce(["心脏增大。", "Mild cardiomegaly."], ["心脏无增大。", "Cardiomegaly."])
    assert result["unreadable"] == {"predictions": 1, "references": 1}
    assert "could not read 1 of 2 predictions and 1 of 2 references" in caplog.text
    assert "predictions[0] '心脏增大。'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="asarg.evaluation.clinical_efficacy"):
        english = compute_ce(PREDICTIONS, REFERENCES)
    assert english["unreadable"] == {"predictions": 0, "references": 0} and not caplog.text


@pytest.mark.parametrize(
    "report, readable",
    [
        ("", True),  # blank: nothing to read, no findings
        ("   \n", True),
        ("Mild cardiomegaly. 心脏增大", True),  # mostly English letters
        ("Кардиомегалия.", False),
        ("心脏增大 CT", False),  # 4 CJK letters, 2 Latin
        ("... 12 --", False),  # no letters at all
        ("Élargissement cardiaque.", True),  # Latin script: read (as English; nothing found)
    ],
)
def test_what_counts_as_unreadable(report, readable):
    from asarg.evaluation.report_labeler import unreadable_reports

    assert unreadable_reports([report]) == ([] if readable else [0])


def test_reports_given_as_bytes_say_decode():
    """Bytes are a Sequence: the labeler said "`reports[0]` is int (67)"."""
    with pytest.raises(ValueError, match=r"is bytes; decode it"):
        label_reports(b"Cardiomegaly.")


def _metric(tmp_path):
    import evaluate

    # The script imports its sibling clinical_efficacy.py relatively, so it loads as evaluate loads it: in a package.
    return evaluate.load(str(METRIC), cache_dir=str(tmp_path), keep_in_memory=True)


def test_add_batch_and_add_name_the_first_bad_entry(tmp_path):
    """add_batch gave evaluate's generic format error, which dumps the whole input."""
    metric = _metric(tmp_path)
    with pytest.raises(ValueError, match=r"`predictions\[1\]` is NoneType") as error:
        metric.add_batch(predictions=["Cardiomegaly.", None], references=["a", "b"])
    assert "Predictions and/or references don't match" not in str(error.value)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metric.add_batch(predictions=["a", "b"], references=["a"])
    with pytest.raises(ValueError, match=r"`references\[0\]` is int"):
        metric.add(prediction="a", reference=7)
    metric.add_batch(predictions=PREDICTIONS[:2], references=REFERENCES[:2])
    metric.add(prediction=PREDICTIONS[2], reference=REFERENCES[2])
    result = metric.compute()
    assert result["num_reports"] == 3
    assert result["f1_micro"] == pytest.approx(compute_ce(PREDICTIONS[:3], REFERENCES[:3])["f1_micro"])
