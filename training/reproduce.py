"""`asarg reproduce`: the paper's four-arm ablation on SynthCXR, end to end and resumable.

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

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from asarg.processing.atomic import atomic_write
from asarg.processing.synthcxr.dataset import read_manifest, write_dataset

from .checkpoints import has_complete_checkpoint
from .small_synth import ARMS, SMALL_SYNTH, SmallSynthSpec

RECIPE = Path(__file__).with_name("recipes") / "small_synth_cpu.yaml"
NORMAL_REPORT = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."


def image_blind_reports(train_reports: list[str]) -> dict[str, str]:
    """The reports that ignore the image, scored beside every model: a fixed normal report, and the most frequent
    training report when there are training reports."""
    blind = {"fixed normal report": NORMAL_REPORT}
    if train_reports:
        blind["most frequent training report"] = Counter(train_reports).most_common(1)[0][0]
    return blind


@dataclass(frozen=True)
class ReproduceSettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    train_sizes: tuple[int, ...] = (500, 2000)
    arms: tuple[str, ...] = tuple(ARMS)
    steps: int = 800
    batch_size: int = 16
    test_studies: int = 250
    data: dict = field(default_factory=lambda: {"rg": (2500, 0), "segmenter": (1500, 101), "vision": (8000, 202)})
    image_size: int = 128
    segmenter_epochs: int = 8
    vision_epochs: int = 12
    spec: SmallSynthSpec = SMALL_SYNTH
    continued_steps: int = 400  # `--continued`: extra steps from the trained baseline (continued.py)
    continued_learning_rate: float = 3e-4


QUICK = ReproduceSettings(
    seeds=(0, 1),
    train_sizes=(32,),
    steps=4,
    batch_size=4,
    test_studies=8,
    image_size=64,
    data={"rg": (60, 0), "segmenter": (30, 101), "vision": (30, 202)},
    segmenter_epochs=1,
    vision_epochs=1,
    continued_steps=2,
    spec=SmallSynthSpec(
        image_size=32,
        patch_size=8,
        vision_hidden=16,
        vision_layers=1,
        vision_heads=2,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        vocab_size=300,
    ),
)


def _done(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def make_data(out: Path, settings: ReproduceSettings) -> dict[str, Path]:
    """The three SynthCXR folders; a folder counts once its `dataset_info.json` (written last) exists."""
    folders = {}
    for name, (n, seed) in settings.data.items():
        folders[name] = out / "data" / name
        if not _done(folders[name] / "dataset_info.json"):
            write_dataset(folders[name], n, seed=seed, size=settings.image_size)
    return folders


def prepare_models(out: Path, folders: dict[str, Path], settings: ReproduceSettings) -> dict[str, Path]:
    """Stages 2-4: the specialist, the vision tower and one initial checkpoint per arm."""
    from .segmenter import train_segmenter
    from .small_synth import build_arm_checkpoints
    from .vision_pretraining import pretrain_vision_tower

    size = settings.spec.image_size
    if not _done(out / "segmenter" / "dice.json"):
        train_segmenter(folders["segmenter"], out / "segmenter", size=size, epochs=settings.segmenter_epochs)
    if not _done(out / "vision" / "vision_metrics.json"):
        pretrain_vision_tower(folders["vision"], out / "vision", settings.spec, epochs=settings.vision_epochs)
    init = {arm: out / "init" / arm for arm in settings.arms}
    if not all(_done(path / "model.safetensors") for path in init.values()):
        reports = [rec["findings_text"] for rec in read_manifest(folders["rg"], "train")]
        tower = out / "vision" / "vision_tower"
        build_arm_checkpoints(out / "init", reports, tower, out / "segmenter", settings.arms, spec=settings.spec)
    return init


def train_run(
    run_dir: Path, init: Path, data: Path, size: int, seed: int, settings: ReproduceSettings, extra: Sequence[str] = ()
) -> None:
    """One SFT run of the recipe in a child process; `--resume_from_checkpoint true` continues a killed run. `extra`:
    more recipe overrides (`--learning_rate 3e-4`)."""
    command = [
        sys.executable,
        "-m",
        "asarg.training.sft_asarg",
        "--config",
        str(RECIPE),
        "--model_name_or_path",
        str(init),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(run_dir),
        "--max_train_samples",
        str(size),
        "--seed",
        str(seed),
        "--max_steps",
        str(settings.steps),
        "--per_device_train_batch_size",
        str(settings.batch_size),
        "--save_steps",
        str(max(settings.steps // 4, 1)),
        "--warmup_steps",
        str(max(settings.steps // 20, 1)),
        "--logging_steps",
        str(max(settings.steps // 16, 1)),
    ]
    command += list(extra)
    if has_complete_checkpoint(run_dir):  # killed before: continue from its newest complete checkpoint
        command += ["--resume_from_checkpoint", "true"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)


def evaluate_run(run_dir: Path, test: list[dict], data: Path, name: str = "result.json") -> dict:
    """Greedy reports for the test studies, written with their CE labels' scores to `run_dir / name`."""
    from PIL import Image

    from asarg.evaluation.clinical_efficacy import compute_ce
    from asarg.generate import generate_reports, load_for_generation

    model, processor = load_for_generation(str(run_dir))
    images = [Image.open(data / rec["image"]).convert("L") for rec in test]
    reports = generate_reports(model, processor, images, batch_size=16)
    result = {"reports": reports, "ce": compute_ce(reports, [rec["findings_text"] for rec in test])}
    atomic_write(run_dir / name, json.dumps(result, indent=1).encode())
    return result


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


def reproduce(out, settings: ReproduceSettings = ReproduceSettings(), train: bool = True) -> dict:
    """The whole pipeline; `train=False` builds the table from the runs that have finished, training nothing."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "settings.json", json.dumps(asdict(settings), indent=2, default=list).encode())
    folders = make_data(out, settings)
    init = prepare_models(out, folders, settings)
    results = run_grid(out, folders, init, settings, train)
    from .reproduce_table import write_tables

    train_reports = [rec["findings_text"] for rec in read_manifest(folders["rg"], "train")]
    blind = image_blind_reports(train_reports)
    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    return write_tables(out, results, blind, [rec["findings_text"] for rec in test], settings)


def continued(out, settings: ReproduceSettings) -> dict:
    """The grown-from-the-trained-baseline regime for every finished baseline run; `continued.{json,md,png}`."""
    from .continued import CONTINUED, run_continued
    from .reproduce_table import write_tables

    out = Path(out)
    folders = make_data(out, settings)
    steps, lr = settings.continued_steps, settings.continued_learning_rate
    results = run_continued(out, folders, settings, steps, lr)
    done = replace(settings, train_sizes=tuple(sorted({size for size, _, _ in results}, reverse=True)))
    test = read_manifest(folders["rg"], "test")[: settings.test_studies]
    references = [rec["findings_text"] for rec in test]
    arms = tuple(CONTINUED)
    return write_tables(out, results, {}, references, replace(done, arms=arms), name="continued", control=arms[0])


def default_model(out, settings: ReproduceSettings, quick: bool = False) -> dict:
    """Stages 1-4, then the embedded default model (`training/default_model.py`) instead of the grid."""
    from .default_model import QUICK_DEFAULT, DefaultModelSettings, train_default_model

    out = Path(out)
    folders = make_data(out, settings)
    prepare_models(out, folders, replace(settings, arms=tuple(ARMS)))
    return train_default_model(out, settings, QUICK_DEFAULT if quick else DefaultModelSettings())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="results folder; a rerun continues where the last one stopped")
    p.add_argument("--quick", action="store_true", help="toy sizes: the whole pipeline in minutes")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--train-sizes", type=int, nargs="+", help="override the training-set sizes")
    p.add_argument("--steps", type=int, help="override the optimiser steps per run")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), help="override the arms (the baseline is needed)")
    p.add_argument(
        "--default-model", action="store_true", help="instead of the grid: train and score the embedded default model"
    )
    p.add_argument("--table-only", action="store_true", help="tables from the finished runs only; train nothing")
    p.add_argument("--export", help="with --default-model: write the embedded model folder here (asarg/default_model)")
    p.add_argument(
        "--continued",
        action="store_true",
        help="after the grid's baselines: the grown-from-LLaVA regime (continued.py)",
    )
    args = p.parse_args(argv)
    settings = QUICK if args.quick else ReproduceSettings()
    overrides = {"seeds": args.seeds, "train_sizes": args.train_sizes, "steps": args.steps, "arms": args.arms}
    settings = replace(settings, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v})
    if args.default_model:
        scores = default_model(args.out, settings, quick=args.quick)
        if args.export:
            from .default_model import export

            print(f"embedded model written to {export(Path(args.out), Path(args.export))}")
        print(json.dumps({k: scores[k] for k in ("studies", "margin_over_best_image_blind")}, indent=1))
        return 0
    if args.continued:
        tables = continued(args.out, settings)
    else:
        tables = reproduce(args.out, settings, train=not args.table_only)
    print(tables["markdown"])
    return 0


__all__ = ["QUICK", "ReproduceSettings", "reproduce"]
