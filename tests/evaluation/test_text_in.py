"""Text in, honestly: every text reader takes UTF-8 with or without a BOM and UTF-16, and names the file when it
cannot read one; the labeler reads text as a person does (NFKC, invisible characters, look-alike letters); and
"X: none" is a negation. The same cleaning reaches the training loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from asarg.cli import main
from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports, unreadable_reports
from asarg.processing.loaders.jsonl import read_image_folder

CARDIO = CHEXPERT_LABELS.index("Cardiomegaly")


@pytest.mark.parametrize(
    "disguised",
    [
        "Moderate cardiomeg\u0430ly.",  # Cyrillic a
        "Moderate cardio\u200bmegaly.",  # zero-width space
        "Moderate cardio\u00admegaly.",  # soft hyphen
        "Moderate \uff43ardiomegaly.",  # full-width c
        "Moderate cardiomegaly\ufeff.",  # a BOM inside the text
    ],
)
def test_disguised_letters_label_as_the_plain_text(disguised):
    assert label_reports([disguised])[0, CARDIO] == 1
    assert unreadable_reports([disguised]) == []


def test_a_ligature_is_read_and_negation_across_confusables_is_not_a_perfect_score():
    assert label_reports(["Small e\ufb00usion."])[0, CHEXPERT_LABELS.index("Pleural Effusion")] == 1
    ce = compute_ce(["No cardiomeg\u0430ly."], ["Moderate cardiomeg\u0430ly."])
    assert ce["per_label"]["Cardiomegaly"]["f1"] == 0.0


def test_a_report_in_another_script_stays_unreadable():
    assert unreadable_reports(["Кардиомегалия умеренная."]) == [0]


@pytest.mark.parametrize("text", ["Pleural effusion: none.", "Findings: heart normal. Pleural effusion: absent."])
def test_x_colon_none_is_negative(text):
    assert label_reports([text])[0, CHEXPERT_LABELS.index("Pleural Effusion")] == 0


ENCODINGS = {
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8 with BOM (Excel)": lambda t: t.encode("utf-8-sig"),
    "utf-16 with BOM": lambda t: t.encode("utf-16"),
    "utf-16-le without BOM": lambda t: t.encode("utf-16-le"),
}
CSV = "report\nModerate cardiomegaly. Café-au-lait.\n"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_csv_reader_takes_each_encoding(tmp_path, encoding, capsys):
    path = tmp_path / "reports.csv"
    path.write_bytes(ENCODINGS[encoding](CSV))
    out = tmp_path / "labels.csv"
    assert main(["label", "--input", str(path), "--column", "report", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").splitlines()[1].split(",")[-14 + CARDIO] == "1.0"
    scores = tmp_path / "scores.json"
    argv = ["evaluate", "--predictions", str(path), "--references", str(path), "--json", str(scores)]
    assert main(argv) == 0
    assert json.loads(scores.read_text())["per_label"]["Cardiomegaly"]["f1"] == 1.0


def test_every_csv_reader_names_a_cp1252_file(tmp_path, capsys):
    path = tmp_path / "reports.csv"
    path.write_bytes(CSV.encode("cp1252"))
    for argv in (
        ["label", "--input", str(path), "--column", "report", "--output", str(tmp_path / "o.csv")],
        ["evaluate", "--predictions", str(path), "--references", str(path)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "UTF-8" in err and "Traceback" not in err


def test_the_image_folder_loader_refuses_cp1252_and_cleans_text(tmp_path):
    for name, data in (
        ("a", "Café. Small e\ufb00usion.".encode("cp1252", "replace")),
        ("b", "Small e\ufb00usion.".encode()),
    ):
        Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_bytes(data)
    rows, skipped = read_image_folder(tmp_path)
    assert [r["report"] for r in rows["train"]] == ["Small effusion."]  # the ligature is plain text to train on
    assert list(skipped) == [next(iter(skipped))] and "not UTF-8" in next(iter(skipped))
