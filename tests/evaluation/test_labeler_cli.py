"""`asarg label` and `asarg evaluate`."""

import csv
import json

import pytest

from asarg.cli import main
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_label_keeps_input_columns_and_adds_the_14_chexpert_columns(tmp_path):
    src = write_csv(
        tmp_path / "reports.csv",
        ["study_id", "findings"],
        [
            ["s1", "No effusion, consolidation or pneumothorax."],
            ["s2", "Possible left lower lobe pneumonia."],
            ["s3", ""],
        ],
    )
    assert main(["label", "--input", str(src), "--column", "findings", "--output", str(tmp_path / "labels.csv")]) == 0
    with (tmp_path / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["study_id", "findings", *CHEXPERT_LABELS]
    assert [r["study_id"] for r in rows] == ["s1", "s2", "s3"]
    assert rows[0]["Pleural Effusion"] == "0.0" and rows[0]["No Finding"] == "1.0" and rows[0]["Edema"] == ""
    assert rows[1]["Pneumonia"] == "-1.0" and rows[1]["No Finding"] == ""


def test_label_reports_a_missing_column(tmp_path, capsys):
    src = write_csv(tmp_path / "r.csv", ["id", "text"], [["1", "x"]])
    assert main(["label", "--input", str(src), "--column", "findings", "--output", str(tmp_path / "o.csv")]) == 2
    assert "no column 'findings'" in capsys.readouterr().err


def test_label_reports_a_header_only_csv(tmp_path, capsys):
    src = tmp_path / "empty.csv"
    src.write_text("id,findings\n")
    assert main(["label", "--input", str(src), "--output", str(tmp_path / "out.csv")]) == 2
    assert "has a header but no reports" in capsys.readouterr().err
    assert label_reports([]).shape == (0, len(CHEXPERT_LABELS))


def test_evaluate_prints_a_table_and_writes_the_chart(tmp_path, capsys):
    preds = write_csv(tmp_path / "p.csv", ["report"], [["Mild cardiomegaly. No effusion."], ["No acute disease."]])
    refs = tmp_path / "r.jsonl"
    refs.write_text(
        "\n".join(json.dumps({"report": r}) for r in ["Cardiomegaly and small effusion.", "Normal chest."])
    )
    chart, out_json = tmp_path / "f1.png", tmp_path / "scores.json"
    argv = ["evaluate", "--predictions", str(preds), "--references", str(refs), "--chart", str(chart)]
    assert main([*argv, "--json", str(out_json), "--baseline", str(preds), "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert (
        "R2Gen convention" in printed and "Cardiomegaly" in printed and "micro" in printed and "vs baseline" in printed
    )
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = json.loads(out_json.read_text())
    assert scores["f1_micro"] == 0.8  # TP Cardiomegaly + No Finding, FN Effusion


def test_evaluate_rejects_different_lengths(tmp_path, capsys):
    preds = write_csv(tmp_path / "p.csv", ["report"], [["a"], ["b"]])
    refs = write_csv(tmp_path / "r.csv", ["report"], [["a"]])
    assert (
        main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--chart", str(tmp_path / "c.png")])
        == 2
    )
    assert "2 predictions but 1 references" in capsys.readouterr().err


# --------------------------------------------------------------------------- output paths and pairing


def _pair(tmp_path):
    preds = write_csv(tmp_path / "p.csv", ["report"], [["Mild cardiomegaly."], ["No acute disease."]])
    refs = write_csv(tmp_path / "r.csv", ["report"], [["Cardiomegaly."], ["Normal chest."]])
    return ["evaluate", "--predictions", str(preds), "--references", str(refs)]


def test_evaluate_writes_no_chart_unless_asked(tmp_path, monkeypatch, capsys):
    argv = _pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "r.csv"]
    assert "chart" not in capsys.readouterr().out


def _fails_before_computing(argv, capsys, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "micro" not in captured.out  # refused before any score was computed


def test_evaluate_output_in_a_missing_folder_is_refused_before_computing(tmp_path, capsys):
    argv = _pair(tmp_path)
    for flag, name in (("--json", "x.json"), ("--chart", "x.png")):
        _fails_before_computing([*argv, flag, str(tmp_path / "nodir" / name)], capsys, "does not exist (it is not")
        assert not (tmp_path / "nodir").exists()
    _fails_before_computing([*argv, "--chart", "/asarg-nodir/c.png"], capsys, "folder /asarg-nodir does not exist")
    assert not (tmp_path.parent / "asarg-nodir").exists() and not __import__("os").path.exists("/asarg-nodir")


def test_evaluate_refuses_outputs_that_would_overwrite_an_input_or_each_other(tmp_path, capsys):
    argv = _pair(tmp_path)
    before = (tmp_path / "p.csv").read_bytes()
    _fails_before_computing([*argv, "--json", str(tmp_path / "p.csv")], capsys, "is one of the input files")
    assert (tmp_path / "p.csv").read_bytes() == before
    same = str(tmp_path / "out.svg")
    _fails_before_computing([*argv, "--json", same, "--chart", same], capsys, "are the same file")
    _fails_before_computing([*argv, "--chart", str(tmp_path)], capsys, "is a folder")
    _fails_before_computing([*argv, "--chart", str(tmp_path / "c.txt")], capsys, "use a .png, .pdf, .svg")
    _fails_before_computing([*argv, "--baseline", str(tmp_path / "p.csv"), "--resamples", "0"], capsys, "at least 1")


def test_evaluate_refuses_files_in_different_orders_and_pairs_by_id_on_request(tmp_path, capsys):
    preds = write_csv(tmp_path / "p.csv", ["id", "report"], [["s1", "Cardiomegaly."], ["s2", "Normal chest."]])
    refs = write_csv(
        tmp_path / "r.csv", ["study_id", "id", "report"], [["x", "s2", "Normal."], ["y", "s1", "Big heart."]]
    )
    argv = ["evaluate", "--predictions", str(preds), "--references", str(refs), "--json", str(tmp_path / "s.json")]
    _fails_before_computing(argv, capsys, "row 1 is study 's2' but the prediction in that row is 's1'")
    assert main([*argv, "--id-column", "id"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["f1_micro"] == 1.0  # each report met its own reference
    capsys.readouterr()
    write_csv(tmp_path / "r.csv", ["id", "report"], [["s1", "Big heart."], ["s3", "Normal."]])
    _fails_before_computing([*argv, "--id-column", "id"], capsys, "ids differ from the predictions' (missing ['s2']")
    _fails_before_computing([*argv, "--id-column", "study"], capsys, "has records without 'study'")


def test_label_takes_its_csv_positionally_like_every_command(tmp_path, capsys):
    src = write_csv(tmp_path / "r.csv", ["findings"], [["Small left pleural effusion."]])
    assert main(["label", str(src), "--output", str(tmp_path / "a.csv")]) == 0
    assert main(["label", "--input", str(src), "--output", str(tmp_path / "b.csv")]) == 0  # the older spelling
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    with pytest.raises(SystemExit) as twice:
        main(["label", str(src), "--input", str(src), "--output", str(tmp_path / "c.csv")])
    assert twice.value.code == 2 and "give the CSV to label once" in capsys.readouterr().err
    with pytest.raises(SystemExit) as no_output:
        main(["label", str(src)])
    assert no_output.value.code == 2 and "--output" in capsys.readouterr().err
