"""`asarg generate`: images in, one report per image out; a bad file is named and the others still run."""

from __future__ import annotations

import json

from conftest import xray_like

from asarg.cli import main
from asarg.generate import generate_reports


def test_generate_writes_json_lines_and_names_the_bad_file(make_asarg, tmp_path, capsys):
    model, processor = make_asarg()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(good):
        xray_like(seed=i).save(path)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "reports.jsonl"
    argv = ["generate", str(good[0]), str(bad), str(good[1]), "--model", str(tmp_path / "model")]
    code = main([*argv, "--json", "--out", str(out), "--max-new-tokens", "5"])
    assert code == 1
    assert str(bad) in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in good]
    assert all(isinstance(row["report"], str) for row in rows)


def test_batched_reports_equal_one_at_a_time(make_asarg):
    model, processor = make_asarg(live_seg=True)
    images = [xray_like(seed=i) for i in range(3)]
    batched = generate_reports(model, processor, images, batch_size=3, max_new_tokens=6)
    single = [generate_reports(model, processor, [image], batch_size=1, max_new_tokens=6)[0] for image in images]
    assert batched == single and len(batched) == 3
