"""The shared run steps of the paper's reproduction (`asarg reproduce`): settings, data, the specialist, the vision
tower, the arms' initial checkpoints, one SFT run and its evaluation. The experiments (`grid`, `continued`,
`default_model`) are built from these."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asarg import training
from asarg.processing.atomic import atomic_write
from asarg.processing.synthcxr.dataset import read_manifest, write_dataset
from asarg.training.checkpoints import has_complete_checkpoint
from asarg.training.segmenter import train_segmenter
from asarg.training.small_synth import ARMS, SMALL_SYNTH, SmallSynthSpec, build_arm_checkpoints
from asarg.training.vision_pretraining import pretrain_vision_tower

RECIPE = Path(training.__file__).with_name("recipes") / "small_synth_cpu.yaml"
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


def prepare_specialists(out: Path, folders: dict[str, Path], settings: ReproduceSettings) -> tuple[Path, Path]:
    """Stages 2-3: the specialist (`out/segmenter`) and the pretrained vision tower (`out/vision/vision_tower`)."""
    size = settings.spec.image_size
    if not _done(out / "segmenter" / "dice.json"):
        train_segmenter(folders["segmenter"], out / "segmenter", size=size, epochs=settings.segmenter_epochs)
    if not _done(out / "vision" / "vision_metrics.json"):
        pretrain_vision_tower(folders["vision"], out / "vision", settings.spec, epochs=settings.vision_epochs)
    return out / "segmenter", out / "vision" / "vision_tower"


def build_init(
    target: Path,
    train_folder: Path,
    tower: Path,
    segmenter: Path,
    settings: ReproduceSettings,
    seed: int = 0,
    arms: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Stage 4: one initial checkpoint per arm under `target/<arm>` (`build_arm_checkpoints`: the tokenizer of
    `train_folder`'s training reports, the tower and specialist given, the LM and projector drawn from `seed`);
    skipped when every arm's weights exist."""
    arms = tuple(arms or settings.arms)
    init = {arm: target / arm for arm in arms}
    if not all(_done(path / "model.safetensors") for path in init.values()):
        reports = [rec["findings_text"] for rec in read_manifest(train_folder, "train")]
        build_arm_checkpoints(target, reports, tower, segmenter, arms, seed=seed, spec=settings.spec)
    return init


def prepare_models(out: Path, folders: dict[str, Path], settings: ReproduceSettings) -> dict[str, Path]:
    """Stages 2-4: the specialist, the vision tower and one initial checkpoint per arm."""
    segmenter, tower = prepare_specialists(out, folders, settings)
    return build_init(out / "init", folders["rg"], tower, segmenter, settings)


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
    from asarg.processing.inference import generate_reports, load_for_generation

    model, processor = load_for_generation(str(run_dir))
    images = [Image.open(data / rec["image"]).convert("L") for rec in test]
    reports = generate_reports(model, processor, images, batch_size=16)
    result = {"reports": reports, "ce": compute_ce(reports, [rec["findings_text"] for rec in test])}
    atomic_write(run_dir / name, json.dumps(result, indent=1).encode())
    return result
