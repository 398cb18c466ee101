"""Grounding benchmark on SynthCXR: does tracing put a finding's sentence on the finding's anatomy, and how fast is it?

    .venv/bin/python benchmarks/quality/grounding.py --model asarg/default_model_dir --data data/synthcxr --n 200
    .venv/bin/python benchmarks/quality/grounding.py --model DIR --n 20 --out grounding.json   # SynthCXR generated in /tmp

For each SynthCXR test study the reference report is traced (teacher-forced, so grounding is measured apart from
generation quality) over the CXAS anatomy groups (`structure_groups`), and every sentence that asserts a finding with
a known location is scored (`score_grounding`): is the top-ranked group one that holds the finding? Three rankings
are scored on the same sentences, overall and per finding type:
  model   the traced ranking (largest log-likelihood drop when the group's maps are removed, first);
  random  the expected hit rate of a uniformly random ranking;
  fixed   one image-independent ranking: the groups ordered by how many training-split findings they hold. A model
          whose tracing does not beat it has learnt where findings usually are, not where they are in this film.
Timing, in the same run on the first --timing-studies studies: tracing one report with the vision tower run once
(now) and per ablated row (before; `trace_report(..., _per_row_vision=True)`), their ratio; the first report
(greedy generation, segmenter in the loop) and full grounding (`ground_report`: generation, tracing, boxes).

A model without a built-in segmenter is given the study's ground-truth masks instead (one per model channel).
Only a model trained with segmentation maps gives meaningful rankings; an untrained one should sit near "random".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

KS = (1, 3)


def load(model_dir: str, device: str):
    from asarg.processing.inference import load_for_generation

    model, processor = load_for_generation(model_dir)
    return model.to(device).eval(), processor


def dataset(data: str | None, n: int, tmp: Path) -> Path:
    """A SynthCXR folder: the given one, or a new one in `tmp` with at least n test studies (every 10th is test)."""
    if data:
        return Path(data)
    from asarg.processing.synthcxr.dataset import write_dataset

    root = tmp / "synthcxr"
    write_dataset(root, n=10 * n, seed=0, size=128)
    return root


def model_masks(record: dict, root: Path, class_names: list[str]) -> np.ndarray:
    """float32 (K, H, W) ground-truth masks in the model's channel order; an anatomy-group name takes the union of
    its members, a name SynthCXR does not draw an empty map."""
    from asarg.processing.synthcxr.dataset import load_masks
    from modeling_asarg import CXAS_ANATOMY_GROUPS

    names, masks = load_masks(record, root)
    by_name = dict(zip(names, masks))
    empty = np.zeros(masks.shape[1:], bool)
    out = []
    for name in class_names:
        members = [by_name[m] for m in CXAS_ANATOMY_GROUPS.get(name, ()) if m in by_name]
        out.append(by_name.get(name, np.logical_or.reduce(members) if members else empty))
    return np.stack(out).astype(np.float32)


def fixed_order(train: list[dict], groups: dict) -> list[str]:
    """The groups by how many training findings lie in them (most first; ties keep the groups' order)."""
    from modeling_asarg import CXAS_ANATOMY_GROUPS

    counts = Counter()
    for record in train:
        for finding in record["findings"]:
            location = set(finding.get("location", ()))
            counts.update(g for g in groups if location & {g, *CXAS_ANATOMY_GROUPS.get(g, ())})
    return sorted(groups, key=lambda g: -counts[g])


def with_ranking(traces: list, order: list[str]) -> list:
    """The same sentences, ranked by `order` instead of their traced drops."""
    from asarg.evaluation.grounding import StructureDrop

    ranking = [StructureDrop(name, 0.0, 0.0) for name in order]
    return [type(t)(t.text, t.span, t.log_likelihood, t.n_tokens, list(ranking)) for t in traces]


def timed(fn, *args, **kwargs):
    """(result, seconds) with the device synchronised, so GPU work is counted where it happens."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    sync()
    return result, time.perf_counter() - start


def trace_studies(model, processor, records: list[dict], root: Path, groups: dict, batch_size: int) -> tuple:
    """(traces per study, findings per study, seconds per report of the traces)."""
    from asarg.evaluation.grounding import trace_report

    builtin = model.model.segmenter is not None
    traces, findings, seconds = [], [], []
    for record in records:
        image = Image.open(root / record["image"]).convert("L")
        seg = {} if builtin else {"segmentation_maps": model_masks(record, root, list(model.config.seg_class_names))}
        study, took = timed(
            trace_report,
            model,
            processor,
            image,
            record["findings_text"],
            structures=groups,
            batch_size=batch_size,
            **seg,
        )
        traces.append(study)
        findings.append(record["findings"])
        seconds.append(took)
    return traces, findings, seconds


def per_finding(traces: list, findings: list, order: list[str]) -> dict:
    """Per finding kind: sentences, and the top-1 hit rate of the model, a random and the fixed ranking.

    Scored study by study, so that each case's `findings` indices point into its own study's manifest. A sentence
    that matches findings of several kinds counts once for each.
    """
    from asarg.evaluation.grounding import score_grounding

    out = {}
    for study, study_findings in zip(traces, findings):
        model = score_grounding(study, study_findings, ks=(1,))
        fixed = score_grounding(with_ranking(study, order), study_findings, ks=(1,))
        for case, fixed_case in zip(model.cases, fixed.cases):  # same sentences, same matches: aligned
            for kind in sorted({study_findings[i]["kind"] for i in case["findings"]}):
                row = out.setdefault(kind, {"n": 0, "model": 0.0, "random": 0.0, "fixed": 0.0})
                row["n"] += 1
                row["model"] += case["rank"] == 1
                row["random"] += case["relevant"] / case["n"]  # hit@1 of a random ranking
                row["fixed"] += fixed_case["rank"] == 1
    for row in out.values():
        row.update({k: row[k] / row["n"] for k in ("model", "random", "fixed")})
    return dict(sorted(out.items()))


def grounding_scores(traces: list, findings: list, order: list[str]) -> dict:
    """hit@k and MRR of the model's, a random and the fixed ranking, overall and (hit@1) per finding kind."""
    from asarg.evaluation.grounding import score_grounding

    model = score_grounding(traces, findings, ks=KS)
    fixed = score_grounding([with_ranking(t, order) for t in traces], findings, ks=KS)
    rates = {
        f"hit_at_{k}": {"model": model.hit_at[k], "random": model.chance_hit_at[k], "fixed": fixed.hit_at[k]}
        for k in KS
    }
    return {
        "sentences": model.n_sentences,
        "unscorable_sentences": model.n_unscorable,
        **rates,
        "mrr": {"model": model.mrr, "random": model.chance_mrr, "fixed": fixed.mrr},
        "per_finding": per_finding(traces, findings, order),
        "fixed_order": order,
    }


def timings(model, processor, records: list[dict], root: Path, groups: dict, args) -> dict:
    """Tracing now vs before (same reports, same run), first report and full grounding, seconds per study."""
    from asarg.evaluation.grounding import ground_report, trace_report
    from asarg.processing.inference import generate_reports

    rows = {"trace": [], "trace_per_row_vision": [], "first_report": [], "full_grounding": []}
    for record in records:
        image = Image.open(root / record["image"]).convert("L")
        report = record["findings_text"]
        common = {"structures": groups, "batch_size": args.batch_size}
        rows["trace"].append(timed(trace_report, model, processor, image, report, **common)[1])
        rows["trace_per_row_vision"].append(
            timed(trace_report, model, processor, image, report, **common, _per_row_vision=True)[1]
        )
        rows["first_report"].append(
            timed(generate_reports, model, processor, [image], max_new_tokens=args.max_new_tokens)[1]
        )
        rows["full_grounding"].append(
            timed(ground_report, model, processor, image, max_new_tokens=args.max_new_tokens)[1]
        )
    out = {f"{k}_seconds": statistics.mean(v) for k, v in rows.items()}
    out["trace_speedup"] = sum(rows["trace_per_row_vision"]) / sum(rows["trace"])
    return out | {"timed_studies": len(records)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="ASaRG checkpoint folder (trained with segmentation maps)")
    p.add_argument("--data", help="SynthCXR folder (default: generate one in a temporary folder)")
    p.add_argument("--n", type=int, default=100, help="test studies to trace")
    p.add_argument("--timing-studies", type=int, default=10, help="studies timed (old vs new tracing, generation)")
    p.add_argument("--batch-size", type=int, default=8, help="ablated rows per forward")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from asarg.evaluation.grounding import structure_groups
    from asarg.processing.synthcxr.dataset import read_manifest

    args = parse(argv)
    model, processor = load(args.model, args.device)
    groups = structure_groups(model.config)
    if not groups:
        print(f"{args.model}: its map channels form no CXAS anatomy group; nothing to benchmark.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = dataset(args.data, args.n, Path(tmp))
        test = read_manifest(root, "test")[: args.n]
        order = fixed_order(read_manifest(root, "train"), groups)
        traces, findings, _ = trace_studies(model, processor, test[:1], root, groups, args.batch_size)  # warm-up
        traces, findings, seconds = trace_studies(model, processor, test, root, groups, args.batch_size)
        result = {"model": args.model, "studies": len(test), "device": args.device, "structures": "groups"}
        result |= grounding_scores(traces, findings, order)
        result["timing"] = timings(model, processor, test[: args.timing_studies], root, groups, args)
        result["timing"]["trace_seconds_mean_all_studies"] = statistics.mean(seconds)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
