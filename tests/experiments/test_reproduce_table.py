"""The reproduction's table: every arm of a size is summarised over the same seeds (the ones all its arms
finished), so the paired tests compare like with like while a grid is still running or has extra seeds."""

from __future__ import annotations

import json
from types import SimpleNamespace

from asarg.experiments.reproduce_table import write_tables

REFERENCES = ["The heart is enlarged.", "No pleural effusion.", "There is a small left pleural effusion."]


def result(reports: list[str]) -> dict:
    from asarg.evaluation.clinical_efficacy import compute_ce

    return {"reports": reports, "ce": compute_ce(reports, REFERENCES)}


def test_cells_use_the_seeds_every_arm_of_their_size_finished(tmp_path):
    good, normal = REFERENCES, ["No pleural effusion."] * 3
    results = {(100, seed, "baseline"): result(normal) for seed in (0, 1, 2, 3)}
    mixed = [good[0], *normal[1:]]
    results |= {
        (100, seed, "features+maps"): result(r) for seed, r in [(0, good), (1, mixed), (3, good)]
    }  # 2: running
    results[(400, 0, "baseline")] = result(normal)  # a size where only the baseline has started
    settings = SimpleNamespace(
        train_sizes=(100, 400), arms=("baseline", "features", "features+maps"), seeds=(0, 1, 2, 3)
    )
    write_tables(tmp_path, results, {"fixed normal report": "No pleural effusion."}, REFERENCES, settings)
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["size"], r["arm"], r["seeds"]) for r in rows] == [
        (100, "baseline", [0, 1, 3]),
        (100, "features+maps", [0, 1, 3]),
        (400, "baseline", [0]),
    ]
    assert len(rows[1]["f1_micro"]["per_seed"]) == 3 and rows[1]["vs_baseline_seeds"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| 100 | 3 | features+maps |" in markdown and "| 400 | 1 | baseline |" in markdown
