"""Tracing tests the text cannot answer (issue 21), each beside the best image-blind baseline that reads the sentence.

    python benchmarks/quality/tracing.py [--model DIR] [--data runs/data/synth-8080] [--prior runs/data/synth-606] [--n 200]

Every finding sentence of the reference reports of `--data` (a SynthCXR seed nothing else uses) that the labeler
matches to exactly one finding of the study is traced on its film, teacher-forced alone after the prompt. A method
scores a structure (or a patch) by how much the sentence's log-likelihood drops when that part of the input is
removed. Methods, all through the model's public seams (`get_vision_features`, `get_seg_tokens`,
`project_image_tokens`):

* `maps`: the structure's map channels set to zero everywhere (today's `trace_report`);
* `seg`: every seg column (U-Net features and maps) of the patches inside the structure's mask set to zero;
* `occlusion`: `seg`, and the vision tokens of those patches replaced by the image's mean vision token;
* `attention` (models with finding tokens; `trace_report`'s default `finding` method): where the finding token's
  classifier looks, its attention over the patches for the sentence's CheXpert observation (labeled from the
  sentence; with sided tokens, the side whose verdict is higher); a structure scores its attention mass. It explains
  the verdict the language model reads, not the wording; it needs no forward of the language model.
* `verdict` (models with finding tokens): `occlusion`, scored on the finding classifier's logit for the sentence's
  observation instead of the sentence's log-likelihood: how much the structure's region supports the verdict the
  language model reads. Like `attention` it reads the sentence only for its observation, not its side word.
* `sides` (models with sided finding tokens, `config.finding_sides`): the lung whose verdict for the sentence's
  observation is higher (the side `trace_report` traces). The side comes from the image's verdicts alone; the
  sentence gives only the observation.

Tests:

1. **Side**: one-sided lung or pleural findings; the traced side is the lung group ("right lung" / "left lung") with
   the larger drop. As written and with the side word removed. Image-blind: reading the side word (as written), the
   majority side of that finding kind in `--prior`'s training reports (side word removed).
2. **Pointing game**: per-patch occlusion; hit@1 / hit@3 = a top patch overlaps the finding's mask. Image-blind: the
   text-conditioned prior, the mean training mask of the same finding kind and side (from `--prior`). 95% bootstrap
   CI of the difference.
3. **Image swap**: the side sentence (side word removed) traced on another film of the test set with the same finding
   kind on the other side; the trace follows the film when it names that film's side.

Writes docs/results/tracing_<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

from asarg.evaluation.grounding import match_findings, split_sentences, structure_groups
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, RuleLabeler
from asarg.evaluation.tracing import sentence_finding
from asarg.processing.inference import load_for_generation, prompt_text
from asarg.processing.loaders.common import messages
from asarg.processing.models import resolve_model
from asarg.processing.synthcxr.dataset import SPLITS, load_finding_masks, read_manifest

SIDED = {"opacity", "consolidation", "effusion", "pneumothorax", "atelectasis", "nodule", "pleural_thickening"}
METHODS = ("maps", "seg", "occlusion", "attention", "verdict", "sides")
NEEDS_FINDING_TOKENS = ("attention", "verdict", "sides")
SIDE_WORD = re.compile(r"\b(right|left)(?:-sided| sided)?\b\s*", re.IGNORECASE)


class Tracer:
    """Log-likelihood of one sentence after one film, under counterfactual seg columns and vision tokens."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.base, self.config = model.model, model.config
        self.channels = self.config.seg_feature_channels if self.config.use_seg_features else 0
        self.groups = structure_groups(self.config)
        self.labeler = RuleLabeler()

    @torch.inference_mode()
    def encode(self, image: Image.Image, sentence: str) -> dict:
        processor = self.processor
        full = processor.apply_chat_template(messages(sentence))
        # up to "ASSISTANT:": the sentence's first word carries the space (a template whose generation prompt ends
        # with it would otherwise put the first word before `start`)
        prefix = prompt_text(processor).rstrip()
        inputs = processor(images=[image], text=[full], return_tensors="pt")
        start = processor(images=[image], text=[prefix], return_tensors="pt")["input_ids"].shape[1]
        pixel = inputs["pixel_values"]
        seg_out = self.base.run_segmenter(inputs["seg_pixel_values"])
        vision = self.base.get_vision_features(pixel)
        seg = self.base.get_seg_tokens(pixel, seg_maps=seg_out["maps"], seg_features=seg_out["features"])
        side = int(round(seg.shape[1] ** 0.5))
        maps = F.adaptive_avg_pool2d(seg_out["maps"].float(), side)[0]  # (K, g, g) coverage per patch
        return {
            "inputs": inputs,
            "start": start,
            "vision": vision,
            "seg": seg,
            "maps": maps,
            "grid": side,
            "sentence": sentence,
        }

    @torch.inference_mode()
    def observation(self, ctx: dict) -> int | None:
        """The sentence's first positive CheXpert observation (its finding token), or None when the model has no
        finding tokens or the sentence asserts none."""
        if self.base.finding_tokens is None:
            return None
        labels = self.labeler.label(ctx["sentence"])
        positive = [k for k, name in enumerate(CHEXPERT_LABELS) if name != "No Finding" and labels.get(name) == 1]
        return positive[0] if positive else None

    def sided(self, ctx: dict) -> tuple[int, int] | None:
        """The (right, left) finding-token indices of the sentence's first positive observation that the model reads
        per side (`config.finding_sides`); None when it has none."""
        if self.base.finding_tokens is None:
            return None
        labels = self.labeler.label(ctx["sentence"])
        for j, name in enumerate(self.config.finding_sides or ()):
            if labels.get(name) == 1:
                return len(CHEXPERT_LABELS) + 2 * j, len(CHEXPERT_LABELS) + 2 * j + 1
        return None

    @torch.inference_mode()
    def relative_verdicts(self, ctx: dict) -> torch.Tensor:
        """(K,) the finding classifier's logits on the whole film, relative to the findings' thresholds."""
        tokens = self.base.project_image_tokens(ctx["vision"], ctx["seg"])
        logits = self.base.finding_logits(tokens, ctx["seg"])[0]
        return self.base.finding_tokens.relative(logits)

    def side_scores(self, ctx: dict) -> dict[str, float] | None:
        """`sides`: the right and left verdicts (logits relative to their thresholds) of the sentence's observation."""
        pair = self.sided(ctx)
        if pair is None:
            return None
        logits = self.relative_verdicts(ctx)
        return {"right lung": float(logits[pair[0]]), "left lung": float(logits[pair[1]])}

    @torch.inference_mode()
    def attention(self, ctx: dict) -> np.ndarray | None:
        """(N,) `trace_report`'s `finding` method: the attention over the patches of the sentence's finding token
        (`sentence_finding`: with sided tokens, the side whose verdict is higher); None when there is none."""
        if self.base.finding_tokens is None:
            return None
        k = sentence_finding(self.model, ctx["sentence"], self.relative_verdicts(ctx), self.labeler)
        if k is None:
            return None
        tokens = self.base.project_image_tokens(ctx["vision"], ctx["seg"])
        weights = self.base.finding_attention(tokens, ctx["seg"])[0, k]
        return weights[weights.shape[0] - ctx["seg"].shape[1] :].numpy()  # the patches (after a CLS token)

    @torch.inference_mode()
    def verdicts(self, ctx: dict, seg_rows: torch.Tensor, vision_rows: torch.Tensor, k: int) -> torch.Tensor:
        """The finding classifier's logit for observation `k` under each row's seg columns and vision tokens."""
        return self.base.finding_logits(self.base.project_image_tokens(vision_rows, seg_rows), seg_rows)[:, k]

    @torch.inference_mode()
    def logliks(self, ctx: dict, seg_rows: torch.Tensor, vision_rows: torch.Tensor) -> torch.Tensor:
        rows = seg_rows.shape[0]
        inputs, start = ctx["inputs"], ctx["start"]
        ids = inputs["input_ids"].expand(rows, -1)
        projected = self.base.project_image_tokens(vision_rows, seg_rows)
        encoded = {"image": BaseModelOutputWithPooling(pooler_output=list(projected))}
        mask = inputs["attention_mask"].expand(rows, -1)
        logits = self.model(input_ids=ids, attention_mask=mask, mm_encoder_outputs=encoded).logits.float()
        logp = logits[:, start - 1 : -1].log_softmax(-1)
        return logp.gather(-1, ids[:, start:, None])[..., 0].sum(-1)

    def region(self, ctx: dict, members: list[int]) -> torch.Tensor:
        """Patches (N,) where the structure covers at least half the patch."""
        return ctx["maps"][members].amax(0).flatten() >= 0.5

    def structure_drops(self, ctx: dict, names: list[str], method: str) -> dict[str, float]:
        if method == "sides":
            scores = self.side_scores(ctx) or {}
            return {name: scores.get(name, 0.0) for name in names}
        if method == "attention":
            weights = self.attention(ctx)
            if weights is None:
                return {name: 0.0 for name in names}
            return {name: float(weights[self.region(ctx, self.groups[name]).numpy()].sum()) for name in names}
        k = self.observation(ctx) if method == "verdict" else None
        if method == "verdict" and k is None:
            return {name: 0.0 for name in names}
        seg, vision = ctx["seg"], ctx["vision"]
        rows_seg, rows_vision = [seg[0]], [vision[0]]
        mean_token = vision[0].mean(0)
        offset = vision.shape[1] - seg.shape[1]  # 1 with a CLS token
        for name in names:
            members = self.groups[name]
            s, v = seg[0].clone(), vision[0].clone()
            if method == "maps":
                s[:, [self.channels + k for k in members]] = 0
            else:
                inside = self.region(ctx, members)
                s[inside] = 0
                if method in ("occlusion", "verdict"):
                    v[offset:][inside] = mean_token
            rows_seg.append(s)
            rows_vision.append(v)
        rows = torch.stack(rows_seg), torch.stack(rows_vision)
        score = self.verdicts(ctx, *rows, k) if method == "verdict" else self.logliks(ctx, *rows)
        return {name: float(score[0] - score[i + 1]) for i, name in enumerate(names)}

    def patch_drops(self, ctx: dict, method: str = "occlusion") -> np.ndarray | None:
        """(N,) drop when each single patch is occluded (seg columns zero, vision token the image's mean): of the
        sentence's log-likelihood (`occlusion`) or of its observation's classifier logit (`verdict`; None when the
        sentence asserts none)."""
        k = self.observation(ctx) if method == "verdict" else None
        if method == "verdict" and k is None:
            return None
        seg, vision = ctx["seg"], ctx["vision"]
        n, offset = seg.shape[1], vision.shape[1] - seg.shape[1]
        seg_rows = seg.repeat(n + 1, 1, 1)
        vision_rows = vision.repeat(n + 1, 1, 1)
        mean_token = vision[0].mean(0)
        for p in range(n):
            seg_rows[p + 1, p] = 0
            vision_rows[p + 1, offset + p] = mean_token
        if method == "verdict":
            ll = self.verdicts(ctx, seg_rows, vision_rows, k)
            return (ll[0] - ll[1:]).numpy()
        drops = []
        for first in range(0, n + 1, 33):
            drops.append(self.logliks(ctx, seg_rows[first : first + 33], vision_rows[first : first + 33]))
        ll = torch.cat(drops)
        return (ll[0] - ll[1:]).numpy()


def finding_sentences(folder: Path, records: list[dict], labeler) -> list[dict]:
    """Reference sentences that assert exactly one finding of their study, with that finding and its mask."""
    cases = []
    for record in records:
        masks = None
        for sentence, _ in split_sentences(record["findings_text"]):
            hits = match_findings(sentence, record["findings"], labeler)
            if len(hits) != 1:
                continue
            finding = record["findings"][hits[0]]
            masks = load_finding_masks(record, folder) if masks is None else masks
            cases.append({"record": record, "sentence": sentence, "finding": finding, "mask": masks[hits[0]]})
    return cases


def side_prior(records: list[dict]) -> dict[str, str]:
    counts = defaultdict(Counter)
    for record in records:
        for finding in record["findings"]:
            if finding["kind"] in SIDED and finding["side"] in ("left", "right"):
                counts[finding["kind"]][finding["side"]] += 1
    return {kind: c.most_common(1)[0][0] for kind, c in counts.items()}


def mask_prior(folder: Path, records: list[dict], grid: int) -> dict[tuple, np.ndarray]:
    sums, counts = {}, Counter()
    for record in records:
        masks = load_finding_masks(record, folder)
        for finding, mask in zip(record["findings"], masks):
            key = (finding["kind"], finding["side"])
            pooled = F.adaptive_avg_pool2d(torch.from_numpy(mask[None].astype(np.float32)), grid)[0].numpy()
            sums[key] = sums.get(key, 0) + pooled
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}


def traced_side(drops: dict[str, float]) -> str:
    return "right" if drops["right lung"] >= drops["left lung"] else "left"


def _bootstrap_diff(a: np.ndarray, b: np.ndarray, rng, n: int = 2000) -> list[float]:
    idx = rng.integers(0, len(a), (n, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]


def side_test(tracer, folder, cases, prior_side, image_of, methods=METHODS) -> dict:
    sided = [c for c in cases if c["finding"]["kind"] in SIDED and c["finding"]["side"] in ("left", "right")]
    result = {"sentences": len(sided)}
    for method in methods:
        written, removed = [], []
        for case in sided:
            image = image_of(case["record"])
            truth = case["finding"]["side"]
            for text, out in ((case["sentence"], written), (SIDE_WORD.sub("", case["sentence"]), removed)):
                drops = tracer.structure_drops(tracer.encode(image, text), ["right lung", "left lung"], method)
                out.append(traced_side(drops) == truth)
        kinds = defaultdict(list)
        for case, hit in zip(sided, removed):
            kinds[case["finding"]["kind"]].append(hit)
        result[method] = {
            "as_written": float(np.mean(written)),
            "side_word_removed": float(np.mean(removed)),
            "side_word_removed_per_kind": {k: [float(np.mean(v)), len(v)] for k, v in sorted(kinds.items())},
        }
    truth = [c["finding"]["side"] for c in sided]
    result["image_blind"] = {
        "as_written (reads the side word)": float(
            np.mean(
                [
                    SIDE_WORD.search(c["sentence"]) is not None and t in c["sentence"].lower()
                    for c, t in zip(sided, truth)
                ]
            )
        ),
        "side_word_removed (majority side of the kind)": float(
            np.mean([prior_side.get(c["finding"]["kind"], "right") == t for c, t in zip(sided, truth)])
        ),
    }
    return result


def swap_test(tracer, cases, image_of, method: str) -> dict:
    sided = [c for c in cases if c["finding"]["kind"] in SIDED and c["finding"]["side"] in ("left", "right")]
    by_kind_side = defaultdict(list)
    for c in sided:
        by_kind_side[(c["finding"]["kind"], c["finding"]["side"])].append(c)
    follows = []
    for case in sided:
        kind, side = case["finding"]["kind"], case["finding"]["side"]
        other_side = "left" if side == "right" else "right"
        others = by_kind_side.get((kind, other_side))
        if not others:
            continue
        other = others[zlib.crc32(case["sentence"].encode()) % len(others)]  # the same pair in every run
        text = SIDE_WORD.sub("", case["sentence"])
        drops = tracer.structure_drops(
            tracer.encode(image_of(other["record"]), text), ["right lung", "left lung"], method
        )
        follows.append(traced_side(drops) == other_side)
    return {"method": method, "pairs": len(follows), "follows_the_film": float(np.mean(follows)) if follows else None}


def pointing_game(tracer, cases, image_of, priors, rng, method: str = "occlusion") -> dict:
    """Per-patch scores (`occlusion`: the drop when each patch alone is occluded; `attention`: the finding
    classifier's attention) against the finding's mask, beside the text-conditioned prior."""
    hits, prior_hits = {1: [], 3: []}, {1: [], 3: []}
    overlap_share = []
    for case in cases:
        ctx = tracer.encode(image_of(case["record"]), case["sentence"])
        grid = ctx["grid"]
        target = F.adaptive_avg_pool2d(torch.from_numpy(case["mask"][None].astype(np.float32)), grid)[0].numpy()
        target = target.flatten() > 0
        if not target.any():
            continue
        drops = tracer.attention(ctx) if method == "attention" else tracer.patch_drops(ctx, method)
        if drops is None:
            continue
        prior = priors.get((case["finding"]["kind"], case["finding"]["side"]))
        prior = prior.flatten() if prior is not None else np.zeros_like(drops)
        for k in (1, 3):
            hits[k].append(bool(target[np.argsort(-drops)[:k]].any()))
            prior_hits[k].append(bool(target[np.argsort(-prior, kind="stable")[:k]].any()))
        overlap_share.append(float(target.mean()))
    result = {"method": method, "sentences": len(hits[1])}
    result["chance_hit@1"] = float(np.mean(overlap_share)) if overlap_share else None
    for k in (1, 3):
        a, b = np.asarray(hits[k], float), np.asarray(prior_hits[k], float)
        result[f"hit@{k}"] = float(a.mean())
        result[f"prior_hit@{k}"] = float(b.mean())
        result[f"difference_ci95@{k}"] = _bootstrap_diff(a, b, rng)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="default: the embedded default model")
    p.add_argument("--data", default="runs/data/synth-8080", help="SynthCXR test films (all splits), an unused seed")
    p.add_argument("--prior", default="runs/data/synth-606", help="SynthCXR training films for the image-blind priors")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--prior-studies", type=int, default=2000)
    p.add_argument("--out", default="docs/results/tracing_default_model.json")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all the model supports")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model, processor = load_for_generation(resolve_model(args.model))
    tracer = Tracer(model, processor)
    folder, prior_folder = Path(args.data), Path(args.prior)
    records = [r for split in SPLITS for r in read_manifest(folder, split)][: args.n]
    prior_records = read_manifest(prior_folder, "train")[: args.prior_studies]
    cases = finding_sentences(folder, records, RuleLabeler())

    def image_of(record):
        return Image.open(folder / record["image"]).convert("L")

    grid = tracer.encode(image_of(records[0]), "The heart is normal.")["grid"]
    supported = [m for m in METHODS if m not in NEEDS_FINDING_TOKENS or model.model.finding_tokens is not None]
    supported = [m for m in supported if m != "sides" or model.config.finding_sides]
    methods = [m for m in (args.methods or supported) if m in supported]
    pointing_methods = [m for m in methods if m in ("occlusion", "attention", "verdict")]
    priors = mask_prior(prior_folder, prior_records, grid)
    result = {
        "model": str(args.model or "embedded default model"),
        "data": str(folder),
        "studies": len(records),
        "finding_sentences": len(cases),
        "side": side_test(tracer, folder, cases, side_prior(prior_records), image_of, methods),
        "swap": {m: swap_test(tracer, cases, image_of, m) for m in methods},
        "pointing": {
            m: pointing_game(tracer, cases, image_of, priors, np.random.default_rng(0), m) for m in pointing_methods
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    side = result["side"]
    print(f"side test ({side['sentences']} sentences): as written / side word removed")
    for method in methods:
        print(f"  {method:10s} {side[method]['as_written']:.3f} / {side[method]['side_word_removed']:.3f}")
    for name, value in side["image_blind"].items():
        print(f"  image-blind {name}: {value:.3f}")
    for method, swap in result["swap"].items():
        print(f"swap ({method}): follows the film {swap['follows_the_film']} over {swap['pairs']} pairs")
    for pg in result["pointing"].values():
        print(
            f"pointing game, {pg['method']} ({pg['sentences']} sentences): hit@1 {pg['hit@1']:.3f} vs prior {pg['prior_hit@1']:.3f} "
            f"(diff CI {pg['difference_ci95@1']}), hit@3 {pg['hit@3']:.3f} vs {pg['prior_hit@3']:.3f}; chance "
            f"{pg['chance_hit@1']:.3f}"
        )


if __name__ == "__main__":
    main()
