"""Hand-written sentences for every rule family of the rule-based labeler (values: 1, 0, -1, nan = blank)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from asarg.evaluation.report_labeler import CHEXPERT_LABELS, RuleLabeler, label_reports

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
B = math.nan


@pytest.fixture(scope="module")
def labeler():
    return RuleLabeler(cache_size=0)


def check(labeler, report, **expected):
    got = labeler.label(report)
    for key, want in expected.items():
        name = key.replace("_", " ")
        value = got[name]
        ok = math.isnan(want) and math.isnan(value) or value == want
        assert ok, f"{report!r}: {name} = {value}, expected {want} ({labeler.explain(report)})"
    return got


@pytest.mark.parametrize(
    "report",
    [
        "No effusion, consolidation or pneumothorax.",
        "There is no pleural effusion, focal consolidation, or pneumothorax.",
        "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
        "Negative for pneumothorax, pleural effusion or consolidation.",
        "No evidence of consolidation, pleural effusion or pneumothorax.",
        "Lungs are free of consolidation, effusion and pneumothorax.",
    ],
)
def test_negated_lists(labeler, report):
    check(labeler, report, Consolidation=0.0, Pleural_Effusion=0.0, Pneumothorax=0.0, No_Finding=1.0)


@pytest.mark.parametrize(
    "report",
    [
        "Pneumothorax is not seen.",
        "A pneumothorax is no longer visualized.",
        "The right-sided pneumothorax has resolved.",
        "Pneumothorax and pleural effusion are not identified.",
    ],
)
def test_post_negation(labeler, report):
    check(labeler, report, Pneumothorax=0.0)


def test_post_negation_does_not_reach_an_earlier_clause(labeler):
    check(
        labeler, "There is a small effusion and the pneumothorax is not seen.", Pleural_Effusion=1.0, Pneumothorax=0.0
    )


@pytest.mark.parametrize(
    "report, label",
    [
        ("Possible left lower lobe pneumonia.", "Pneumonia"),
        ("Findings are suspicious for pneumonia.", "Pneumonia"),
        ("A small left effusion may be present.", "Pleural Effusion"),
        ("Patchy opacity may represent atelectasis.", "Atelectasis"),
        ("Bibasilar atelectasis or scarring.", "Atelectasis"),
        ("Edema versus infection.", "Edema"),
        ("Mild pulmonary vascular congestion.", "Edema"),
    ],
)
def test_hedges_are_uncertain(labeler, report, label):
    assert labeler.label(report)[label] == -1.0, labeler.explain(report)


@pytest.mark.parametrize(
    "report",
    ["Cannot exclude a small pneumothorax.", "A small pneumothorax cannot be excluded.", "No new pneumothorax."],
)
def test_pre_negation_uncertainty_beats_negation(labeler, report):
    check(labeler, report, Pneumothorax=-1.0, No_Finding=B)


def test_hedge_covers_what_follows_it_not_what_precedes(labeler):
    # The reference labeler's own sample: the opacity is certain, its causes are not.
    check(
        labeler,
        "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
        Lung_Opacity=1.0,
        Atelectasis=-1.0,
        Consolidation=-1.0,
    )


def test_laterality_or_is_not_a_differential(labeler):
    check(labeler, "Right or left lower lobe atelectasis.", Atelectasis=1.0)


@pytest.mark.parametrize(
    "report",
    [
        "No change in the small left effusion.",
        "No significant interval change in the moderate right pleural effusion.",
        "Small left pleural effusion without significant change.",
    ],
)
def test_no_change_is_not_a_negation(labeler, report):
    check(labeler, report, Pleural_Effusion=1.0, No_Finding=B)


@pytest.mark.parametrize(
    "report, value",
    [
        ("Heart size is normal.", 0.0),
        ("Normal heart size.", 0.0),
        ("The heart is normal in size.", 0.0),
        ("The heart is not enlarged.", 0.0),
        ("Heart size is at the upper limits of normal.", 0.0),
        ("The heart, mediastinum and hila are within normal limits.", 0.0),
        ("The heart is mildly enlarged.", 1.0),
        ("Enlarged cardiac silhouette.", 1.0),
        ("Stable mild cardiomegaly.", 1.0),
        ("Borderline heart size.", -1.0),
        ("The heart and lungs have XXXX XXXX in the interval.", B),
        ("Calcified granuloma projecting over the heart.", B),
    ],
)
def test_heart_anatomy_needs_a_size_qualifier(labeler, report, value):
    check(labeler, report, Cardiomegaly=value)


def test_scope_stops_at_a_new_clause(labeler):
    check(labeler, "Cardiomegaly without edema.", Cardiomegaly=1.0, Edema=0.0)
    check(labeler, "No pneumothorax, but there is a small effusion.", Pneumothorax=0.0, Pleural_Effusion=1.0)
    check(labeler, "Mild cardiomegaly, lungs are clear.", Cardiomegaly=1.0)
    check(labeler, "No pleural effusion. Small pneumothorax.", Pleural_Effusion=0.0, Pneumothorax=1.0)


def test_aggregation_positive_beats_uncertain_beats_negative(labeler):
    check(labeler, "Small left effusion. No right effusion.", Pleural_Effusion=1.0)
    check(labeler, "No large effusion. A small effusion is possible.", Pleural_Effusion=-1.0)


def test_heart_failure_implies_uncertain_cardiomegaly(labeler):
    check(labeler, "Findings consistent with congestive heart failure.", Edema=1.0, Cardiomegaly=-1.0)


@pytest.mark.parametrize(
    "report, devices",
    [
        ("Endotracheal tube and right PICC line in place.", 1.0),
        ("Left chest wall pacemaker with leads in the right heart.", 1.0),
        ("Interval removal of the chest tube.", 0.0),
        ("No tubes or lines.", 0.0),
        ("Plate-like atelectasis at the left base.", B),
        ("Prior tuberculosis.", B),
    ],
)
def test_devices(labeler, report, devices):
    check(labeler, report, Support_Devices=devices)


def test_devices_do_not_rule_out_no_finding(labeler):
    check(
        labeler, "Right PICC line tip in the SVC. Lungs clear. Heart size normal.", Support_Devices=1.0, No_Finding=1.0
    )


@pytest.mark.parametrize(
    "report",
    [
        "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
        "No acute cardiopulmonary abnormality.",
        "The cardiomediastinal silhouette is within normal limits. The lungs are clear. No pneumothorax.",
        "Stable cardiomediastinal silhouette. Lungs clear.",
    ],
)
def test_normal_reports(labeler, report):
    got = check(labeler, report, No_Finding=1.0)
    assert all(math.isnan(v) or v == 0.0 for k, v in got.items() if k != "No Finding"), got


@pytest.mark.parametrize(
    "report",
    [
        "Degenerative changes of the thoracic spine.",
        "Calcified granuloma in the right upper lobe.",
        "Hyperinflated lungs.",
    ],
)
def test_other_findings_rule_out_no_finding(labeler, report):
    check(labeler, report, No_Finding=B)


def test_negated_other_finding_keeps_no_finding(labeler):
    check(labeler, "No emphysema. Lungs are clear.", No_Finding=1.0)


def test_hyphens_and_deidentification_tokens(labeler):
    check(labeler, "No focal air-space disease.", Lung_Opacity=0.0)
    check(labeler, "There are no XXXX of a pleural effusion.", Pleural_Effusion=0.0)
    check(labeler, "Left basilar atelectasis/scarring.", Atelectasis=-1.0)  # "/" reads as "or"


def test_edema_outside_the_lungs_is_not_edema(labeler):
    check(labeler, "Soft tissue edema around the ankle.", Edema=B)


@pytest.mark.parametrize("report", ["", "   \n\t ", "Kein Pleuraerguss.", "双肺未见明显异常。", "..."])
def test_text_without_mentions_is_no_finding_like_the_reference_labeler(labeler, report):
    got = labeler.label(report)
    assert got["No Finding"] == 1.0
    assert all(math.isnan(v) for k, v in got.items() if k != "No Finding")


def test_agrees_with_the_reference_labeler_samples(labeler):
    import csv

    path = SHARED / "reference" / "chexpert-labeler-data" / "labeled_reports.csv"
    if not path.is_file():
        pytest.fail(f"Reference labeler samples not found at {path} (the shared folder beside the checkout).")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        expected = {name: float(row[name]) if row[name] else B for name in CHEXPERT_LABELS}
        check(labeler, row["Reports"], **{k.replace(" ", "_"): v for k, v in expected.items()})


def test_sentence_cache_gives_the_same_labels():
    reports = ["No effusion. Mild cardiomegaly.", "No effusion. Normal heart size.", "No effusion. Mild cardiomegaly."]
    cold = RuleLabeler(cache_size=0).label_many(reports)
    warm = RuleLabeler(cache_size=2).label_many(reports * 2)
    assert [[str(v) for v in r] for r in warm] == [[str(v) for v in r] for r in cold * 2]


@pytest.mark.parametrize("bad", [["ok", None], ["ok", 3], ["ok", b"bytes"]])
def test_non_string_reports_raise(bad):
    with pytest.raises(ValueError, match=r"reports\[1\]"):
        label_reports(bad)


def test_a_single_string_is_not_a_list_of_reports():
    with pytest.raises(ValueError, match="list of report strings"):
        label_reports("No effusion.")


def test_unknown_labeler_raises():
    with pytest.raises(ValueError, match="Unknown labeler"):
        label_reports(["x"], labeler="negbio")


@pytest.mark.slow
def test_labeler_imports_no_torch_or_transformers():
    code = "import sys, asarg.evaluation.report_labeler as l; l.RuleLabeler().label('No effusion.');"
    code += "bad = [m for m in ('torch', 'transformers', 'modeling_asarg') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_phrase_lists_keep_the_mit_notice():
    from asarg.evaluation.report_labeler.phrases import PHRASE_DIR

    notice = (PHRASE_DIR / "LICENSE.chexpert-labeler").read_text()
    assert "Copyright (c) 2018 Stanford Machine Learning Group" in notice
    copied = [p for p in PHRASE_DIR.glob("*/*.txt") if "From the CheXpert labeler" in p.read_text()]
    assert len(copied) >= 14
