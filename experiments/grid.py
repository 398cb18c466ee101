"""The paper's four-arm grid (baseline, features, maps, features + maps) over training sizes and seeds, and its table.

    asarg reproduce --out runs/reproduce            # the full grid (hours on this CPU)
    asarg reproduce --out runs/quick --quick        # the same pipeline at toy sizes (minutes)

Stages, each keeping its result on disk so that a rerun (after kill -9 too) continues where it stopped:
1. data — three SynthCXR folders from their own seeds: report generation, the specialist's, the vision tower's;
2. the specialist — `asarg train-segmenter` on its folder (per-class Dice in `segmenter/dice.json`);
3. the vision tower — pretrained on label classification of its folder (`vision/vision_metrics.json`);
4. one initial checkpoint per arm (`init/<arm>`): same tokenizer, tower, specialist, LM and projector;
5. one SFT run per (training size, seed, arm) through the TRL recipe, in a subprocess that resumes from its newest
   complete checkpoint, then greedy reports for the test split and their scores (`runs/<run>/result.json`);
6. the table: per size and arm, mean and spread over seeds, paired tests against the baseline over test studies
   (pooled over seeds) and over seeds, and image-blind reports scored the same way (`results.json`, `results.md`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from asarg.processing.atomic import atomic_write
from asarg.processing.synthcxr.dataset import read_manifest

from .reproduce_table import write_tables
from .steps import ReproduceSettings, _done, evaluate_run, image_blind_reports, make_data, prepare_models, train_run


def run_grid(
    out: Path, folders: dict[str, Path], init: dict[str, Path], settings: ReproduceSettings, train: bool = True
) -> dict:
    """Stage 5: every (size, seed, arm) run, skipping the ones whose `result.json` exists (`train=False`: only
    those)."""
    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    results = {}
    for size in settings.train_sizes:
        for seed in settings.seeds:
            for arm in settings.arms:
                run_dir = out / "runs" / f"n{size}-seed{seed}-{arm}"
                if not _done(run_dir / "result.json"):
                    if not train:
                        continue
                    train_run(run_dir, init[arm], folders["rg"], size, seed, settings)
                    evaluate_run(run_dir, test, folders["rg"])
                results[(size, seed, arm)] = json.loads((run_dir / "result.json").read_text())
                print(f"n={size} seed={seed} {arm}: CE micro-F1 {results[(size, seed, arm)]['ce']['f1_micro']:.3f}")
    return results


def reproduce(out, settings: ReproduceSettings | None = None, train: bool = True) -> dict:
    """The whole pipeline; `train=False` builds the table from the runs that have finished, training nothing."""
    settings = settings or ReproduceSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "settings.json", json.dumps(asdict(settings), indent=2, default=list).encode())
    folders = make_data(out, settings)
    init = prepare_models(out, folders, settings)
    results = run_grid(out, folders, init, settings, train)
    train_reports = [rec["findings_text"] for rec in read_manifest(folders["rg"], "train")]
    blind = image_blind_reports(train_reports)
    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    return write_tables(out, results, blind, [rec["findings_text"] for rec in test], settings)


__all__ = ["reproduce", "run_grid"]
