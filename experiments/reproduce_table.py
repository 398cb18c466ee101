"""The reproduction's results table: per training size and arm, CE-F1 over seeds, tests against the baseline, and the
image-blind reports scored the same way. Written as `results.json`, `results.md` and `results.png`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.evaluation.significance import compare_systems
from asarg.processing.atomic import atomic_write

FOCUS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices", "Lung Opacity", "Edema")


def _summary(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "per_seed": [round(v, 4) for v in values],
    }


def _seed_test(arm: list[float], base: list[float]) -> dict:
    """Seeds as the unit: a paired t-test of the per-seed differences (and how many seeds the arm wins)."""
    from scipy import stats

    diff = np.asarray(arm) - np.asarray(base)
    p = float(stats.ttest_rel(arm, base).pvalue) if len(diff) > 1 and diff.std() > 0 else float("nan")
    return {"mean_difference": float(diff.mean()), "wins": int((diff > 0).sum()), "seeds": len(diff), "p_ttest": p}


def _arm_row(results: dict, size: int, arm: str, seeds, references: list[str], control: str = "baseline") -> dict:
    ce = [results[(size, s, arm)]["ce"] for s in seeds]
    row = {
        "size": size,
        "seeds": list(seeds),
        "arm": arm,
        "f1_micro": _summary([c["f1_micro"] for c in ce]),
        "f1_macro": _summary([c["f1_macro"] for c in ce]),
        "per_label_f1": {label: _summary([c["per_label"][label]["f1"] for c in ce]) for label in FOCUS},
        "distinct_reports": _summary([len(set(results[(size, s, arm)]["reports"])) for s in seeds]),
    }
    if arm != control and all((size, s, control) in results for s in seeds):
        arm_reports = [r for s in seeds for r in results[(size, s, arm)]["reports"]]
        base_reports = [r for s in seeds for r in results[(size, s, control)]["reports"]]
        pooled = compare_systems(arm_reports, base_reports, references * len(seeds), n_resamples=2000)
        row["vs_baseline_studies"] = {k: pooled[k] for k in ("score_a", "score_b", "bootstrap", "permutation")}
        base_micro = [results[(size, s, control)]["ce"]["f1_micro"] for s in seeds]
        row["vs_baseline_seeds"] = _seed_test(row["f1_micro"]["per_seed"], base_micro)
    return row


def _complete_seeds(results: dict, size: int, settings) -> tuple[list[str], list[int]]:
    """(arms with a finished run at `size`, the seeds on which every one of them finished). Every arm of a size is
    summarised over the same seeds, so the paired tests pair like with like; a run still going (`--table-only`
    before the grid is done) or an extra seed of one arm only is left out."""
    arms = [arm for arm in settings.arms if any((size, seed, arm) in results for seed in settings.seeds)]
    seeds = [seed for seed in settings.seeds if all((size, seed, arm) in results for arm in arms)]
    return arms, seeds


def _markdown(rows: list[dict], blind: list[dict]) -> str:
    head = "| size | seeds | arm | CE micro-F1 | CE macro-F1 | " + " | ".join(FOCUS) + " | p (studies) | p (seeds) |"
    lines = [head, "|" + "---|" * (7 + len(FOCUS))]
    for row in rows:
        cells = [str(row["size"]), str(len(row["seeds"])), row["arm"], _pm(row["f1_micro"]), _pm(row["f1_macro"])]
        cells += [_pm(row["per_label_f1"][label]) for label in FOCUS]
        studies = row.get("vs_baseline_studies", {}).get("permutation", {}).get("p_value")
        seeds = row.get("vs_baseline_seeds", {}).get("p_ttest")
        cells += [_p(studies), _p(seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    for row in blind:
        labels = [f"{row['per_label'][label]['f1']:.3f}" for label in FOCUS]
        lines.append(
            f"| — | | {row['system']} | {row['f1_micro']:.3f} | {row['f1_macro']:.3f} | "
            + " | ".join(labels)
            + " | | |"
        )
    return "\n".join(lines)


def _pm(summary: dict) -> str:
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _p(value) -> str:
    return "" if value is None or value != value else f"{value:.3g}"


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:  # nothing has finished yet: no bars to draw
        return
    sizes = sorted({row["size"] for row in rows})
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        picked = [next((r for r in rows if r["size"] == s and r["arm"] == arm), None) for s in sizes]
        ax.bar(  # an arm that has not run at a size gets no bar there
            np.arange(len(sizes)) + i * width,
            [r["f1_micro"]["mean"] if r else np.nan for r in picked],
            width,
            yerr=[r["f1_micro"]["std"] if r else 0.0 for r in picked],
            label=arm,
            capsize=3,
        )
    ax.set_xticks(np.arange(len(sizes)) + width * (len(arms) - 1) / 2, [f"n={s}" for s in sizes])
    ax.set_ylabel("CE micro-F1 (mean ± sd over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tables(
    out: Path,
    results: dict,
    blind_reports: dict[str, str],
    references: list[str],
    settings,
    name: str = "results",
    control: str = "baseline",
) -> dict:
    """`<name>.json/.md/.png` for `settings`' sizes x arms; p-values compare each arm with `control`."""
    rows = []
    for size in settings.train_sizes:
        arms, seeds = _complete_seeds(results, size, settings)
        rows += [_arm_row(results, size, arm, seeds, references, control) for arm in arms] if seeds else []
    blind = []
    for system, report in blind_reports.items():
        ce = compute_ce([report] * len(references), references)
        blind.append({"system": system, "report": report, **{k: ce[k] for k in ("f1_micro", "f1_macro", "per_label")}})
    markdown = _markdown(rows, blind)
    payload = {"rows": rows, "image_blind": blind, "markdown": markdown}
    atomic_write(Path(out) / f"{name}.json", json.dumps(payload, indent=2).encode())
    atomic_write(Path(out) / f"{name}.md", (markdown + "\n").encode())
    _plot(Path(out) / f"{name}.png", rows)
    return payload
