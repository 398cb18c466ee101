"""Sided finding labels (`report_labeler.findings`): the side each sentence places a positive one-sided finding on;
unknown where a sentence asserts it without a side; absent on the other side; uncertain stays unknown."""

from __future__ import annotations

import numpy as np
import pytest

from asarg.evaluation.report_labeler.findings import finding_label_rows, finding_names, sided_labels

SIDED = ["Pleural Effusion", "Pneumothorax"]


@pytest.mark.parametrize(
    "report, expected",
    [
        ("Small right pleural effusion. No pneumothorax.", [1, 0, 0, 0]),
        ("Left pleural effusion, small in size. There is a small right pneumothorax.", [0, 1, 1, 0]),
        ("Moderate bilateral pleural effusions.", [1, 1, 0, 0]),
        ("Small pleural effusion.", [-1, -1, 0, 0]),  # asserted without a side: both unknown
        ("Blunting of the left costophrenic angle may reflect a trace pleural effusion.", [-1, -1, 0, 0]),  # uncertain
        ("No pleural effusion or pneumothorax.", [0, 0, 0, 0]),
        ("The lungs are clear.", [0, 0, 0, 0]),
    ],
)
def test_each_sentence_places_its_finding(report, expected):
    assert sided_labels([report], SIDED)[0].tolist() == expected


def test_the_rows_are_the_observations_then_their_sides():
    names = finding_names(SIDED)
    assert len(names) == 18 and names[14:16] == ["Pleural Effusion (right)", "Pleural Effusion (left)"]
    rows = finding_label_rows(["Small right pleural effusion."], SIDED)
    assert rows.dtype == np.int8 and rows.shape == (1, 18)
    assert rows[0, names.index("Pleural Effusion")] == 1 and rows[0, 14:].tolist() == [1, 0, 0, 0]
    assert finding_label_rows(["Small right pleural effusion."]).shape == (1, 14)


def test_an_observation_without_a_side_is_refused():
    with pytest.raises(ValueError, match="'Cardiomegaly' is not a one-sided"):
        finding_names(["Cardiomegaly"])


def test_findings_first_puts_devices_then_asserted_findings_first_and_keeps_the_labels():
    from asarg.evaluation.report_labeler import label_reports
    from asarg.evaluation.report_labeler.findings import findings_first

    report = (
        "The lungs are clear. No pneumothorax. Possible trace left pleural effusion. Moderate cardiomegaly. "
        "Endotracheal tube terminates 4 cm above the carina. Right PICC tip in the SVC."
    )
    ordered = findings_first([report, "", "Heart size is normal. No effusion."])
    assert ordered[0] == (
        "Endotracheal tube terminates 4 cm above the carina. Right PICC tip in the SVC. "  # devices, as written
        "Possible trace left pleural effusion. Moderate cardiomegaly. "  # asserted (uncertain counts), as written
        "The lungs are clear. No pneumothorax."
    )
    assert ordered[1:] == ["", "Heart size is normal. No effusion."]  # nothing to move: unchanged
    np.testing.assert_array_equal(
        label_reports(ordered), label_reports([report, "", "Heart size is normal. No effusion."])
    )
    with pytest.raises(ValueError):
        findings_first([None])
