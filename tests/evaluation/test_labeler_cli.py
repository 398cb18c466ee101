"""`asarg label` and `asarg evaluate`."""

import csv
import json

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
