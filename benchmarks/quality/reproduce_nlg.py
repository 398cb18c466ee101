"""NLG scores (BLEU-1..4, ROUGE-L) of the reproduction's n=2000 runs, from the committed per-run reports.

python benchmarks/quality/reproduce_nlg.py   # reads docs/results/reproduce/, runs/reproduce/data/rg; writes docs/results/reproduce_nlg.json
"""

import json
import statistics
from pathlib import Path

from asarg.evaluation.nlg_metrics import compute_nlg
from asarg.processing.synthcxr.dataset import read_manifest

refs = [r["findings_text"] for r in read_manifest(Path("runs/reproduce/data/rg"), "test")[:250]]
RUNS = Path("docs/results/reproduce")


def common_seeds(arms: list[str]) -> list[int]:
    """The seeds every arm of the group has a committed run for (the same seeds for every arm, as in the table)."""
    return [s for s in range(20) if all((RUNS / f"n2000-seed{s}-{arm}.json").is_file() for arm in arms)]


out = {}
groups = [["baseline", "features", "maps", "features+maps"], ["continued-baseline", "continued-features+maps"]]
for arms in groups:
    seeds = common_seeds(arms)
    for arm in arms:
        per = []
        for s in seeds:
            reports = json.loads((RUNS / f"n2000-seed{s}-{arm}.json").read_text())["reports"]
            per.append(compute_nlg(reports, refs, metrics=("bleu", "rouge_l")))
        out[arm] = {"seeds": seeds} | {k: [round(p[k], 4) for p in per] for k in per[0]}
        print(
            arm,
            seeds,
            {k: f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for k, v in out[arm].items() if k != "seeds"},
        )
Path("docs/results/reproduce_nlg.json").write_text(json.dumps(out, indent=1))
