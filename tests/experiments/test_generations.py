"""The default model's released hold-out generations (issue 23): `write_generations` writes one JSON line per
hold-out study (id, generated report, reference, labels); `export` puts it beside the model card, and `asarg push`
carries it into the Hub folder. On the session's quick default model (`quick_model`)."""

from __future__ import annotations

import json

import pytest

from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.experiments.default_model import GENERATIONS, export, holdout_records, write_generations

VALUES = {"positive", "uncertain", "negative"}


@pytest.fixture(scope="module")
def exported(quick_model, tmp_path_factory):
    out = quick_model.parents[1]
    target = tmp_path_factory.mktemp("export") / "default_model"
    export(out, target)
    return out, target


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_generations_are_the_scored_hold_out_reports(quick_model, tmp_path):
    out = quick_model.parents[1]
    rows = read_lines(write_generations(out, tmp_path))
    records = holdout_records(out / "data" / "holdout")
    scored = json.loads((quick_model / "holdout.json").read_text())
    scores = json.loads((out / "default" / "scores.json").read_text())
    assert len(rows) == len(records) == scores["studies"]
    assert [r["study_id"] for r in rows] == [rec["id"] for rec in records]
    assert len({r["study_id"] for r in rows}) == len(rows)
    assert [r["generated"] for r in rows] == scored["reports"]
    assert [r["reference"] for r in rows] == [rec["findings_text"] for rec in records]
    for row in rows:
        assert set(row) == {"study_id", "image", "generated", "reference", "generated_labels", "reference_labels"}
        assert set(row["generated_labels"].values()) <= VALUES and set(row["reference_labels"].values()) <= VALUES
    assert any(row["reference_labels"] for row in rows)
    # Re-scoring the released file gives the model card's CE.
    again = compute_ce([r["generated"] for r in rows], [r["reference"] for r in rows])
    assert again["f1_micro"] == pytest.approx(scores["ce"]["f1_micro"])
    assert again["f1_macro"] == pytest.approx(scores["ce"]["f1_macro"])


def test_export_writes_them_beside_the_card_and_push_uploads_them(exported, tmp_path):
    from asarg import publish

    out, target = exported
    assert (target / "README.md").is_file()
    shipped = (target / GENERATIONS).read_bytes()
    assert shipped == write_generations(out, tmp_path).read_bytes()
    hub = tmp_path / "hub"
    assert publish.main([str(target), "org/asarg", "--dry-run", "--out", str(hub)]) == 0
    assert (hub / GENERATIONS).read_bytes() == shipped
    assert GENERATIONS in "\n".join(publish.listing(hub))


def test_without_scored_reports_it_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="asarg reproduce --default-model"):
        write_generations(tmp_path, tmp_path)
