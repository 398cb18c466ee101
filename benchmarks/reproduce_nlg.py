"""NLG scores (BLEU-1..4, ROUGE-L) of the reproduction's n=2000 runs, from the committed per-run reports.

python benchmarks/reproduce_nlg.py   # reads docs/results/reproduce/, runs/reproduce/data/rg; writes docs/results/reproduce_nlg.json
"""

import json
import statistics
from pathlib import Path

from asarg.evaluation.nlg_metrics import compute_nlg
from asarg.processing.synthcxr.dataset import read_manifest

refs = [r["findings_text"] for r in read_manifest(Path("runs/reproduce/data/rg"), "test")[:250]]
out = {}
for arm in ["baseline", "features", "maps", "features+maps", "continued-baseline", "continued-features+maps"]:
    per = []
    for s in (0, 1, 2):
        reports = json.loads(Path(f"docs/results/reproduce/n2000-seed{s}-{arm}.json").read_text())["reports"]
        per.append(compute_nlg(reports, refs, metrics=("bleu", "rouge_l")))
    out[arm] = {k: [round(p[k], 4) for p in per] for k in per[0]}
    print(arm, {k: f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for k, v in out[arm].items()})
Path("docs/results/reproduce_nlg.json").write_text(json.dumps(out, indent=1))
