"""The embedded default model on SynthCXR studies from seeds the project never used, beside image-blind reports.

    python benchmarks/quality/default_model_unseen.py [--seeds 5151 6262 7373 8484 9595] [--n 400] [--model DIR]

The model card's scores come from one hold-out seed (404); this is the check the issue names ("on SynthCXR studies
generated from seeds the project never used"), repeated over several seeds so the spread is visible. Every study
of a seed is scored (all splits). Image-blind reports, scored the same way: the fixed normal report, the most
frequent report of the default model's training set (when `--data` has it) and — a stronger, oracle constant no
model could know — the most frequent report of the scored studies themselves. Writes
docs/results/default_model_unseen_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from PIL import Image

from asarg.evaluation.clinical_efficacy import compute_ce
from asarg.experiments.default_model import holdout_records
from asarg.experiments.steps import image_blind_reports
from asarg.processing.inference import generate_reports, load_for_generation
from asarg.processing.models import default_model_path
from asarg.processing.synthcxr.dataset import read_manifest, write_dataset


def blind_reports(records: list[dict], train_folders: list[Path]) -> dict[str, str]:
    folders = [folder for folder in train_folders if (folder / "dataset_info.json").is_file()]
    blind = image_blind_reports([rec["findings_text"] for folder in folders for rec in read_manifest(folder, "train")])
    blind["most frequent scored report (oracle)"] = Counter(r["findings_text"] for r in records).most_common(1)[0][0]
    return blind


def score_seed(model, processor, seed: int, n: int, train_folders: list[Path], image_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"seed{seed}"
        write_dataset(folder, n, seed=seed, size=image_size)
        records = holdout_records(folder)
        images = [Image.open(folder / rec["image"]).convert("L") for rec in records]
        reports = generate_reports(model, processor, images, batch_size=16)
    refs = [rec["findings_text"] for rec in records]
    model_ce = compute_ce(reports, refs)
    blind = {
        name: compute_ce([text] * len(refs), refs)["f1_micro"]
        for name, text in blind_reports(records, train_folders).items()
    }
    card_blind = max(v for k, v in blind.items() if "oracle" not in k)
    return {
        "seed": seed,
        "studies": len(records),
        "f1_micro": model_ce["f1_micro"],
        "f1_macro": model_ce["f1_macro"],
        "image_blind_f1_micro": blind,
        "margin_over_best_image_blind": model_ce["f1_micro"] - card_blind,
        "margin_over_oracle_constant": model_ce["f1_micro"] - max(blind.values()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5151, 6262, 7373, 8484, 9595])
    parser.add_argument("--n", type=int, default=400, help="studies per seed")
    parser.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[Path("runs/reproduce/data/default"), Path("runs/reproduce/data/refine")],
        help="the model's training sets (for the most frequent training report)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/default_model_unseen_seeds.json"))
    args = parser.parse_args(argv)
    folder = args.model or default_model_path()
    model, processor = load_for_generation(str(folder))
    image_size = model.config.vision_config.image_size  # SynthCXR drawn at the size the default model was trained on
    per_seed = []
    for seed in args.seeds:
        per_seed.append(score_seed(model, processor, seed, args.n, args.data, image_size))
        row = per_seed[-1]
        print(f"seed {seed}: micro-F1 {row['f1_micro']:.3f}, margin {row['margin_over_best_image_blind']:+.3f}")
    margins = [row["margin_over_best_image_blind"] for row in per_seed]
    summary = {
        "per_seed": per_seed,
        "margin_mean": statistics.mean(margins),
        "margin_sd": statistics.stdev(margins) if len(margins) > 1 else 0.0,
        "margin_min": min(margins),
        "command": "python benchmarks/quality/default_model_unseen.py " + " ".join(argv or []),
    }
    print(
        f"margin over the best image-blind report: {summary['margin_mean']:+.3f} ± {summary['margin_sd']:.3f} (min {summary['margin_min']:+.3f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
