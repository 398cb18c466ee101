"""How much of what the inputs show reaches the report: per label, the report model's F1 beside a classifier that reads
exactly the projector's inputs and beside an image-blind constant report (issue 20's headroom table).

    python benchmarks/quality/report_headroom.py --data runs/data/synth-606 --test runs/data/synth-7070 [--model DIR]

* **The report model**: greedy reports (the model's own generation config) for every study of `--test`, labelled
  with the project's labeler, as CE-F1 does.
* **Same-input classifier**: per label, an L2 logistic regression on what the projector reads — the vision tower's
  image tokens (the config's feature layer and select strategy) joined with the seg columns (`get_seg_tokens`: U-Net
  features and maps on the patch grid), average-pooled to a `--pool`×`--pool` grid and standardised. Trained on
  `--train-studies` studies of `--data`'s train split; each label's threshold is the one that maximises F1 on
  `--data`'s validation split (never the test studies).
* **Image-blind**: the most frequent training report and the fixed normal report, repeated for every film.

Targets everywhere are the labeler's labels of the reference reports (uncertain = negative), so the three rows are
scored identically. Also: the share of distinct reports and of distinct positive-label sets, against the
references' own shares. Writes `--out` (JSON) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from asarg.evaluation.clinical_efficacy import binarize, ce_scores
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports
from asarg.experiments.default_model import holdout_records
from asarg.experiments.steps import NORMAL_REPORT
from asarg.processing.inference import generate_reports, load_for_generation, prompt_text
from asarg.processing.models import resolve_model
from asarg.processing.synthcxr.dataset import read_manifest


def labels_of(reports: list[str]) -> np.ndarray:
    return binarize(label_reports(reports), "negative")


@torch.inference_mode()
def projector_inputs(model, processor, images: list, pool: int, batch_size: int = 32) -> np.ndarray:
    """(N, pool*pool*(D+C+K)): the tower's selected image tokens and the seg columns, pooled to a pool×pool grid."""
    text = prompt_text(processor)
    base, config = model.model, model.config
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        inputs = processor(images=chunk, text=[text] * len(chunk), return_tensors="pt")
        hidden = base.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
        tokens = hidden[config.vision_feature_layer]
        if config.vision_feature_select_strategy == "default":
            tokens = tokens[:, 1:]
        seg = base.get_seg_tokens(inputs["pixel_values"], seg_pixel_values=inputs.get("seg_pixel_values"))
        joined = tokens if seg is None else torch.cat([tokens, seg], dim=-1)
        side = int(round(joined.shape[1] ** 0.5))
        grid = joined.transpose(1, 2).reshape(len(chunk), -1, side, side)
        rows.append(F.adaptive_avg_pool2d(grid, pool).flatten(1).numpy())
    return np.concatenate(rows)


def fit_classifier(x_train, y_train, x_val, y_val, c: float) -> tuple[list, StandardScaler]:
    """Per label: (logistic model or None, threshold chosen on validation for F1)."""
    scaler = StandardScaler().fit(x_train)
    xt, xv = scaler.transform(x_train), scaler.transform(x_val)
    heads = []
    for j in range(y_train.shape[1]):
        if y_train[:, j].min() == y_train[:, j].max():  # one class only in training: predict it
            heads.append((None, float(y_train[0, j])))
            continue
        clf = LogisticRegression(C=c, max_iter=3000).fit(xt, y_train[:, j])
        scores = clf.predict_proba(xv)[:, 1]
        best = max(np.unique(np.r_[scores, 1.01]), key=lambda t: _f1(scores >= t, y_val[:, j]))
        heads.append((clf, float(best)))
    return heads, scaler


def _f1(pred, ref) -> float:
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = (pred & ref).sum()
    return 2 * tp / max(1, pred.sum() + ref.sum())


def predict(heads, scaler, x) -> np.ndarray:
    x = scaler.transform(x)
    out = np.zeros((len(x), len(heads)), dtype=np.int8)
    for j, (clf, threshold) in enumerate(heads):
        out[:, j] = (clf.predict_proba(x)[:, 1] >= threshold) if clf is not None else int(threshold)
    return out


def diversity(reports: list[str], labels: np.ndarray) -> dict:
    return {
        "distinct_reports_share": len(set(reports)) / len(reports),
        "distinct_label_sets_share": len({tuple(row) for row in labels}) / len(reports),
        "most_common_report_share": Counter(reports).most_common(1)[0][1] / len(reports),
    }


def run(args) -> dict:
    model, processor = load_for_generation(resolve_model(args.model))
    data, test_folder = Path(args.data), Path(args.test)
    train = read_manifest(data, "train")[: args.train_studies]
    val = read_manifest(data, "validation")[: args.val_studies]
    test = holdout_records(test_folder)[: args.test_studies]

    def images(folder, records):
        return [Image.open(folder / rec["image"]).convert("L") for rec in records]

    y = {name: labels_of([r["findings_text"] for r in recs]) for name, recs in (("train", train), ("val", val))}
    refs = [r["findings_text"] for r in test]
    y_test = labels_of(refs)
    x_train = projector_inputs(model, processor, images(data, train), args.pool)
    x_val = projector_inputs(model, processor, images(data, val), args.pool)
    x_test = projector_inputs(model, processor, images(test_folder, test), args.pool)
    heads, scaler = fit_classifier(x_train, y["train"], x_val, y["val"], args.c)
    classifier = ce_scores(predict(heads, scaler, x_test), y_test, CHEXPERT_LABELS)

    reports = generate_reports(model, processor, images(test_folder, test), batch_size=16)
    y_reports = labels_of(reports)
    report_model = ce_scores(y_reports, y_test, CHEXPERT_LABELS)
    frequent = Counter(r["findings_text"] for r in train).most_common(1)[0][0]
    blind = {
        name: ce_scores(np.repeat(labels_of([text]), len(refs), 0), y_test, CHEXPERT_LABELS)
        for name, text in (("most frequent training report", frequent), ("fixed normal report", NORMAL_REPORT))
    }
    return {
        "model": str(args.model or "embedded default model"),
        "data": str(data),
        "test": str(test_folder),
        "studies": {"train": len(train), "validation": len(val), "test": len(test)},
        "classifier": {"kind": "logistic regression (L2)", "C": args.c, "pool": args.pool, "dims": x_train.shape[1]},
        "report_model": report_model,
        "same_input_classifier": classifier,
        "image_blind": blind,
        "diversity": {"report_model": diversity(reports, y_reports), "references": diversity(refs, y_test)},
        "reports": reports,
    }


def markdown(result: dict) -> str:
    blind_name = max(result["image_blind"], key=lambda k: result["image_blind"][k]["f1_micro"])
    rows = {
        "report model": result["report_model"],
        "same-input classifier": result["same_input_classifier"],
        f"image-blind ({blind_name})": result["image_blind"][blind_name],
    }
    lines = ["| | micro | macro | " + " | ".join(CHEXPERT_LABELS) + " |", "|---" * (3 + len(CHEXPERT_LABELS)) + "|"]
    for name, scores in rows.items():
        per = [f"{scores['per_label'][label]['f1']:.2f}" for label in CHEXPERT_LABELS]
        lines.append(f"| {name} | {scores['f1_micro']:.3f} | {scores['f1_macro']:.3f} | " + " | ".join(per) + " |")
    support = [str(result["report_model"]["per_label"][label]["support"]) for label in CHEXPERT_LABELS]
    lines.append("| test positives | | | " + " | ".join(support) + " |")
    d = result["diversity"]
    lines.append(
        f"\nDistinct reports: model {d['report_model']['distinct_reports_share']:.1%}, references "
        f"{d['references']['distinct_reports_share']:.1%}; distinct positive-label sets: model "
        f"{d['report_model']['distinct_label_sets_share']:.1%}, references "
        f"{d['references']['distinct_label_sets_share']:.1%}; the most common report covers "
        f"{d['report_model']['most_common_report_share']:.1%} of the model's."
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--data", required=True, help="SynthCXR folder: the classifier's train and validation splits")
    p.add_argument("--test", required=True, help="SynthCXR folder whose studies (all splits) are scored")
    p.add_argument("--train-studies", type=int, default=4000)
    p.add_argument("--val-studies", type=int, default=800)
    p.add_argument("--test-studies", type=int, default=400)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--c", type=float, default=0.05, help="inverse L2 strength of the logistic regressions")
    p.add_argument("--out", default="docs/results/report_headroom.json")
    args = p.parse_args(argv)
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
