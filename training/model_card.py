"""The model card of an ASaRG Hub folder: YAML metadata (with a `model-index` built from `scores.json`) and a body.

`scores.json` is what `asarg reproduce --default-model` writes: `{"studies", "ce": <compute_ce result>,
"image_blind": {name: <compute_ce result>}, "settings"}`. Without it the card carries no numbers (and says so).
"""

from __future__ import annotations

import json
from pathlib import Path

CXAS_ARCHITECTURE = "cxas_unet_resnet50"
PAPER = "https://arxiv.org/abs/2507.16623"
FINE_TUNE = """\
# my-films/: one image per study (name.png or name.jpg) and its report beside it (name.txt)
asarg finetune my-films/ --out runs/my-asarg --model {repo_id}           # full fine-tune (TRL SFTTrainer)
asarg finetune my-films/ --out runs/my-asarg-lora --model {repo_id} --lora
# or the recipe itself: python -m asarg.training.sft_asarg --config <recipe.yaml>"""


def _eval_results(scores: dict | None) -> list:
    from huggingface_hub import EvalResult

    if not scores:
        return []
    common = {
        "task_type": "image-text-to-text",
        "task_name": "Chest X-ray report generation",
        "dataset_type": "synthcxr",
        "dataset_name": f"SynthCXR hold-out ({scores['studies']} studies, seed {scores['settings']['holdout'][1]})",
        "dataset_split": "all",
    }
    metrics = (("f1_micro", "CE micro-F1"), ("f1_macro", "CE macro-F1"), ("f1_example", "CE example-F1"))
    return [
        EvalResult(**common, metric_type="f1", metric_name=name, metric_value=round(scores["ce"][key], 4))
        for key, name in metrics
    ]


def _uses_cxas(config: dict) -> bool:
    return (config.get("segmenter_config") or {}).get("architecture") == CXAS_ARCHITECTURE


def card_data(config: dict, scores: dict | None, repo_id: str, base_model: str | None = None):
    from huggingface_hub import ModelCardData

    return ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        # Weights derived from CXAS inherit its CC BY-NC-SA 4.0 licence; everything trained here is Apache-2.0.
        license="cc-by-nc-sa-4.0" if _uses_cxas(config) else "apache-2.0",
        tags=["asarg", "llava", "radiology", "chest-x-ray", "report-generation", "segmentation", "custom_code"],
        base_model=base_model,
        datasets=["synthcxr"] if scores else None,
        metrics=["f1"] if scores else None,
        eval_results=_eval_results(scores) or None,
    )


def _scores_section(scores: dict | None) -> str:
    if not scores:
        return "No scores were given for this checkpoint (`asarg push --scores scores.json` adds them).\n"
    rows = [("this model", scores["ce"])] + list(scores.get("image_blind", {}).items())
    lines = ["| reports | CE micro-F1 | CE macro-F1 | CE example-F1 |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {ce['f1_micro']:.3f} | {ce['f1_macro']:.3f} | {ce['f1_example']:.3f} |" for name, ce in rows
    ]
    per_label = ", ".join(f"{k} {v['f1']:.2f}" for k, v in scores["ce"]["per_label"].items() if v["support"])
    return (
        f"On {scores['studies']} SynthCXR studies from a seed that no training set used, greedy decoding, "
        f"labels from the built-in CheXpert labeler ({scores['ce']['definition']}):\n\n"
        + "\n".join(lines)
        + f"\n\nPer-label F1 (labels present in the hold-out set): {per_label}.\n"
    )


def _training_section(scores: dict | None) -> str:
    """The default model's recipe, from the settings `experiments/default_model.py` stores beside its scores."""
    settings = (scores or {}).get("settings")
    if not settings or "refine_data" not in settings:
        return ""
    (n1, seed1), (n2, seed2) = settings["data"], settings["refine_data"]
    text = (
        "## Training\n\n"
        "`asarg reproduce --out runs/reproduce --default-model` (resumable), from the reproduction's features + maps "
        "starting point (a SynthCXR-pretrained vision tower; the trained U-Net specialist, always frozen; LM and "
        "projector shared by every arm of the ablation), TRL `SFTTrainer`, batch 16, cosine schedule, map dropout "
        f"{settings['seg_map_dropout']} (whole maps removed per sample, so any subset is an input it has seen):\n\n"
        f"1. {settings['steps']} steps at the recipe's rate (1e-3), vision tower frozen, on the 80 % train split of "
        f"{n1:,} SynthCXR studies (seed {seed1});\n"
        f"2. {settings['refine_steps']} steps at {settings['refine_learning_rate']:g}, vision tower trained too, on "
        f"the train split of a fresh {n2:,} studies (seed {seed2}).\n"
    )
    decoding = scores.get("decoding")
    if decoding and "sweep" in decoding:
        chosen = decoding["chosen"]
        sweep = "; ".join(
            f"rp {s['repetition_penalty']:g}, guidance {s['guidance_scale']:g}: {s['f1_micro']:.3f} / {s['f1_macro']:.3f}"
            for s in decoding["sweep"]
        )
        text += (
            f"3. Decoding: greedy with repetition penalty {chosen['repetition_penalty']:g} and classifier-free "
            f"guidance scale {chosen['guidance_scale']:g} (in `generation_config.json`), the best {decoding['criterion']}"
            f" on {decoding['validation_studies']} validation studies of seed {seed1} (micro / macro: {sweep}).\n"
        )
    elif decoding:
        sweep = ", ".join(f"{k}: {v:.3f}" for k, v in decoding["f1_micro_by_repetition_penalty"].items())
        text += (
            f"3. Decoding: greedy with repetition penalty {decoding['chosen']:g} (in `generation_config.json`), the "
            f"best CE micro-F1 on {decoding['validation_studies']} validation studies of seed {seed1} ({sweep}).\n"
        )
    if settings.get("recipe"):
        text += f"\nBoth stages add `{' '.join(settings['recipe'])}` to the recipe (chosen in issue 20's screening).\n"
    return text + f"\nScored on the hold-out seed {settings['holdout'][1]}, which no training set used.\n"


def _model_section(config: dict) -> str:
    seg = config.get("segmenter_config") or {}
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    arm = {(True, True): "features + maps", (True, False): "features", (False, True): "maps"}.get(
        (bool(config.get("use_seg_features")), bool(config.get("use_seg_maps"))), "LLaVA baseline (no seg inputs)"
    )
    lines = [
        f"- arm: **{arm}**; segmentation classes: {config.get('num_seg_classes')}",
        f"- vision tower: CLIP ViT, {vision.get('num_hidden_layers')} layers × {vision.get('hidden_size')}, "
        f"{vision.get('image_size')} px, patch {vision.get('patch_size')}",
        f"- language model: {text.get('model_type')}, {text.get('num_hidden_layers')} layers × "
        f"{text.get('hidden_size')}, vocabulary {text.get('vocab_size')}",
        f"- segmenter (runs inside `generate`): {seg.get('architecture', 'none: seg inputs given precomputed')}"
        + (f", {seg.get('image_size')} px" if seg else ""),
    ]
    if config.get("finding_tokens"):
        sides = config.get("finding_sides") or []
        per = "one per CheXpert observation" + (f" and per side of {', '.join(sides)}" if sides else "")
        if sides and config.get("finding_side_gate"):
            per += " (each side's query pools only the patches the segmenter marks as that side)"
        lines.append(
            f"- finding tokens: a classifier on the projected image tokens (one attention query per finding) gives "
            f"{config.get('num_finding_labels')} more image tokens, {per}, each between a learned 'absent' and "
            "'present' embedding by its probability relative to the finding's threshold; the language model reads "
            "them with the image, and `trace_report` traces each sentence through them"
        )
    if _uses_cxas(config):
        lines.append(
            "- **Licence**: the segmenter weights come from CXAS (CC BY-NC-SA 4.0): this model is for "
            "non-commercial use and derivatives must be shared alike."
        )
    return "\n".join(lines) + "\n"


BODY = """
# {name}

ASaRG ([arXiv 2507.16623]({paper})): LLaVA whose multi-modal projector also reads, for every visual token, the
intermediate features and per-class anatomical segmentation maps of a specialist chest X-ray segmenter.

**Not for clinical use.** This is a research model. {synthetic}

## Use

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
```

or from the command line: `asarg generate cxr.png --model {repo_id}` (`pip install asarg`), which also traces each
sentence to the anatomy behind it (`--ground`).

## Fine-tune on your own data

```bash
{fine_tune}
```

## Model

{model}
{training}
## Scores

{scores}
{ablation}
## Limitations

- Trained and scored on SynthCXR, a synthetic benchmark with known anatomy and finding locations; its scores say
  nothing about real radiographs, where this model has not been validated.
- CE-F1 comes from a rule-based CheXpert labeler, which misreads some phrasings; treat small differences with care.
- Reports are greedy decodes of a small model: wording repeats, and findings its vision tower cannot see are missed.
  Decoding settings (e.g. a repetition penalty) are in `generation_config.json`; pass your own to `generate`.
"""


def _variants_section(folder: Path) -> str:
    """CE-F1 as the literature reports it (14 / 5 labels, micro / macro, uncertain negative / positive), from the
    released hold-out generations (`generations.jsonl`) when the folder has them."""
    path = folder / "generations.jsonl"
    if not path.is_file():
        return ""
    from asarg.evaluation.clinical_efficacy import compute_ce, format_variants_table

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ce = compute_ce([r["generated"] for r in rows], [r["reference"] for r in rows], variants=True)
    return (
        "## CE-F1 as other papers report it\n\n"
        f"The same {len(rows)} hold-out reports (`generations.jsonl`: study id, generated report, reference, labels), "
        "scored under each convention the literature uses, named as it names them:\n\n"
        + format_variants_table(ce["variants"], markdown=True)
        + "\n\n"
    )


def model_card(folder: Path, config: dict, repo_id: str, base_model: str | None = None):
    """The `ModelCard` of a Hub folder (reads `scores.json`, `headroom.md`, `generations.jsonl` and `ablation.md` from
    it when present)."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    scores = json.loads((folder / "scores.json").read_text()) if (folder / "scores.json").is_file() else None
    ablation = (folder / "ablation.md").read_text() if (folder / "ablation.md").is_file() else ""
    headroom = (folder / "headroom.md").read_text() if (folder / "headroom.md").is_file() else ""
    if headroom:
        headroom = "## How much of what the inputs show reaches the report\n\n" + headroom.strip() + "\n\n"
    if ablation:
        ablation = "## The paper's ablation, reproduced on SynthCXR\n\n" + ablation.strip() + "\n"
    body = BODY.format(
        name=repo_id.split("/")[-1],
        paper=PAPER,
        repo_id=repo_id,
        synthetic="It was trained on synthetic radiographs (SynthCXR) only." if scores else "",
        fine_tune=FINE_TUNE.format(repo_id=repo_id),
        model=_model_section(config),
        training=_training_section(scores),
        scores=_scores_section(scores),
        ablation=headroom + _variants_section(folder) + ablation,
    )
    data = card_data(config, scores, repo_id, base_model)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


__all__ = ["card_data", "model_card"]
