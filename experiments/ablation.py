"""Issue 22: the paper's claim tested decisively — a paired, sequential four-arm ablation in two tower regimes.

    asarg reproduce --ablation --out runs/ablation --max-seeds 8     # the first look (resumable; tens of CPU-hours)
    asarg reproduce --ablation --out runs/ablation                   # every look until the stopping rules say stop
    asarg reproduce --ablation --out runs/ablation --table-only      # the looks from the finished runs, training nothing
    python -m asarg.experiments.ablation --out runs/ablation ...     # the same

The design, fixed in `docs/results/ablation/PREREGISTRATION.md` and held by `AblationSettings`:
- **Regimes.** (a) `pretrained`: the label-pretrained vision tower, frozen; (b) `random`: a random tower of the same
  shape, frozen (drawn from the seed), a stand-in for "a tower that knows nothing of chest findings".
- **Seeds.** Per seed s: the language model and projector drawn from s (`build_arm_checkpoints(seed=s)`), shared by
  every arm of that seed in both regimes; the training seed s (data order, finding-balanced draw) shared by every arm.
- **Arms.** baseline, features, maps, features + maps; features + maps vs baseline is the primary comparison and runs
  at every seed; features and maps alone run on the first `secondary_seeds` seeds.
- **Recipe.** The small-synth recipe with issue 20's changes as pre-registered (`FINDING_TOKEN_RECIPE`), the seg arms reading
  the seg cache (the specialist is frozen), on `train_studies` studies of their own SynthCXR seed.
- **Test set.** Every study of a SynthCXR seed used by nothing else (`test`), the same for every run.
- **Endpoints**, per run, written beside it: `likelihood.json` (teacher-forced: per study and observation log p(positive
  sentence) - log p(negated sentence), per-label AUROC, macro mean; `asarg.evaluation.label_likelihood`) and
  `generation.json` (greedy reports, their labels, CE-F1).
- **Extra rows** (evaluations of trained runs, no training): the maps and features + maps runs of the first
  `secondary_seeds` seeds with the maps set to zero at inference (`maps_removed`), and with maps from a degraded
  segmenter (`degraded_segmenter`: the specialist's training cut short, its Dice in `segmenter-degraded/dice.json`;
  the features still come from the trained specialist).
- **Looks** at `looks` seeds: per regime, the hierarchical bootstrap (seeds, then test studies) of features + maps vs
  baseline on the primary endpoint decides: success when its one-sided p is below `success_p[look]`, futility when
  the upper end of its 95% interval is below `futility_margin`; a regime that stopped trains no more seeds. Each
  look is written to `looks/look-<n>.json`; `summary.json` holds every regime x arm (and extra row) vs baseline.

Resumable: a finished run (its weights and checksums written) is never trained again, a killed one continues from its
newest complete checkpoint (`steps.train_run`), and an endpoint file that exists is not computed again.
"""

from __future__ import annotations

import argparse
import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from asarg.processing.atomic import atomic_write
from asarg.processing.checkpoints import MANIFEST
from asarg.processing.synthcxr.dataset import SPLITS, read_manifest
from asarg.training.small_synth import ARMS

from .default_model import FINDING_TOKEN_RECIPE
from .steps import QUICK, ReproduceSettings, _done, build_init, make_data, prepare_specialists, train_run

REGIMES = ("pretrained", "random")
ENDPOINTS = ("label_auroc", "ce_micro_f1")  # the first is the primary endpoint
VARIANTS = ("maps_removed", "degraded_segmenter")
PRIMARY_ARM = "features+maps"
CONTROL = "baseline"


@dataclass(frozen=True)
class AblationSettings:
    """The pre-registered design (`docs/results/ablation/PREREGISTRATION.md`); `QUICK_ABLATION`: toy sizes."""

    # The specialist, the tower and their data: the grid's (`ReproduceSettings`), without its report-generation set.
    base: ReproduceSettings = field(
        default_factory=lambda: replace(ReproduceSettings(), data={"segmenter": (1500, 101), "vision": (8000, 202)})
    )
    regimes: tuple[str, ...] = REGIMES
    arms: tuple[str, ...] = tuple(ARMS)
    looks: tuple[int, ...] = (8, 16, 24)  # seeds 0 .. n-1 at each look
    secondary_seeds: int = 8  # features and maps alone, and the extra rows, on seeds 0 .. secondary_seeds-1
    train: tuple[int, int] = (16000, 1111)  # (studies generated, SynthCXR seed); its train split feeds the runs
    train_studies: int = 12800  # = steps x batch size: one pass
    test: tuple[int, int] = (2000, 2222)  # (studies, seed): every study of this seed is a test study
    steps: int = 800
    batch_size: int = 16
    recipe: tuple[str, ...] = FINDING_TOKEN_RECIPE  # issue 20's recipe as pre-registered (R7), read, never copied
    seg_cache: bool = True  # the seg arms read the frozen specialist's output from a cache shared by every run
    degraded_segmenter: tuple[int, int] = (1, 150)  # (epochs, studies) of the cut-short specialist
    primary_endpoint: str = "label_auroc"
    success_p: tuple[float, ...] = (0.01, 0.01, 0.01)  # per look; Pocock-like: overall one-sided alpha about 0.022
    futility_margin: float = 0.01  # stop when the upper end of the 95% interval lies below this gain
    confidence_level: float = 0.95
    n_resamples: int = 10000  # hierarchical bootstrap draws (p resolves to 1e-4)
    permutation_resamples: int = 500  # the pooled permutation test, reported beside it
    eval_batch_size: int = 16
    random_tower_seed_offset: int = 10_000  # the random tower of seed s is drawn from s + this offset


QUICK_ABLATION = AblationSettings(
    base=replace(QUICK, data={"segmenter": (30, 101), "vision": (30, 202)}),
    looks=(2,),
    secondary_seeds=1,
    train=(40, 1111),
    train_studies=32,
    test=(12, 2222),
    steps=4,
    batch_size=4,
    seg_cache=False,  # today a loaded checkpoint's segmenter requires gradients (see check_seg_cache)
    degraded_segmenter=(1, 4),
    success_p=(0.01,),
    n_resamples=200,
    permutation_resamples=20,
    eval_batch_size=4,
)


# ----------------------------------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------------------------------


def run_dir(out: Path, regime: str, seed: int, arm: str) -> Path:
    return out / "runs" / regime / f"seed{seed}-{arm}"


def arms_at(seed: int, settings: AblationSettings) -> tuple[str, ...]:
    """The arms trained at `seed`: baseline and features + maps always, the others on the first seeds only."""
    return tuple(a for a in settings.arms if a in (CONTROL, PRIMARY_ARM) or seed < settings.secondary_seeds)


def variants_at(seed: int, arm: str, settings: AblationSettings) -> tuple[str | None, ...]:
    """None (the run as trained), and for an arm that reads maps on the first seeds, the inference-time variants."""
    extra = VARIANTS if ARMS[arm][1] and seed < settings.secondary_seeds else ()
    return (None, *extra)


def prepare(out: Path, settings: AblationSettings) -> dict:
    """Data (the specialist's, the tower's, the training and the test set), the specialist, the tower and the
    degraded specialist; each stage skipped once its result exists."""
    base = replace(settings.base, data={**settings.base.data, "train": settings.train, "test": settings.test})
    folders = make_data(out, base)
    segmenter, tower = prepare_specialists(out, folders, settings.base)
    degraded = out / "segmenter-degraded"
    if VARIANTS and not _done(degraded / "dice.json"):
        from asarg.training.segmenter import train_segmenter

        epochs, studies = settings.degraded_segmenter
        train_segmenter(
            folders["segmenter"], degraded, size=settings.base.spec.image_size, epochs=epochs, max_studies=studies
        )
    return {"folders": folders, "segmenter": segmenter, "tower": tower, "degraded": degraded}


def random_tower(target: Path, settings: AblationSettings, seed: int) -> Path:
    """A frozen tower that knows nothing: the pretrained tower's shape with weights drawn from `seed` + offset."""
    if _done(target / "model.safetensors"):
        return target
    import torch
    from transformers import CLIPVisionModel

    from asarg.training.small_synth import vision_config

    torch.manual_seed(seed + settings.random_tower_seed_offset)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    CLIPVisionModel(vision_config(settings.base.spec)).save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def init_for(out: Path, prepared: dict, regime: str, seed: int, settings: AblationSettings) -> dict[str, Path]:
    """The initial checkpoints of one (regime, seed): every arm of it shares the LM and projector drawn from `seed`."""
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r}; choose from {REGIMES}")
    tower = prepared["tower"]
    if regime == "random":
        tower = random_tower(out / "towers" / f"random-seed{seed}", settings, seed)
    target = out / "init" / regime / f"seed{seed}"
    arms = arms_at(seed, settings)
    base = replace(settings.base, arms=arms)
    return build_init(target, prepared["folders"]["train"], tower, prepared["segmenter"], base, seed=seed, arms=arms)


def trained(path: Path) -> bool:
    """A run is trained once the trainer's final save and its checksums (written last) exist."""
    return _done(path / "model.safetensors") and _done(path / MANIFEST)


def check_seg_cache(init: Path) -> None:
    """The SFT recipe's seg cache refuses a segmenter whose weights require gradients. The checkpoint's config says
    `freeze_segmenter`, but a model loaded by `from_pretrained` has (seen with transformers 5) its segmenter's
    `requires_grad` back on; the seg arms would then fail after their data is prepared. Checked once, up front."""
    from transformers import AutoModelForImageTextToText

    from asarg.processing.checkpoints import load_model

    model = load_model(str(init), AutoModelForImageTextToText)
    if any(p.requires_grad for p in model.model.segmenter.parameters()):
        raise RuntimeError(
            f"{init}: loaded with from_pretrained, its frozen segmenter requires gradients, so the SFT recipe's seg "
            "cache (--seg_cache_dir) refuses it. Fix the freeze on load (modeling_asarg: freeze_segmenter after "
            "from_pretrained), or set AblationSettings(seg_cache=False) and pre-register the segmenter online."
        )


def train_one(out: Path, path: Path, init: Path, seed: int, arm: str, prepared: dict, settings: AblationSettings):
    extra = list(settings.recipe)
    if settings.seg_cache and any(ARMS[arm]):
        if not prepared.get("seg_cache_checked"):
            check_seg_cache(init)
            prepared["seg_cache_checked"] = True
        extra += ["--seg_cache_dir", str(out / "seg_cache")]
    steps = replace(settings.base, steps=settings.steps, batch_size=settings.batch_size)
    train_run(path, init, prepared["folders"]["train"], settings.train_studies, seed, steps, extra)


def scored_studies(folder: Path) -> list[dict]:
    return [rec for split in SPLITS for rec in read_manifest(folder, split)]


# ----------------------------------------------------------------------------------------------------------------------
# The endpoints of one run, and the inference-time variants
# ----------------------------------------------------------------------------------------------------------------------


@contextmanager
def seg_variant(model, variant: str | None, degraded_dir: Path | None = None):
    """Within the block, the model's built-in segmenter gives the variant's maps: `maps_removed` (zeros: the maps are
    absent) or `degraded_segmenter` (the maps of the cut-short specialist in `degraded_dir`); the features stay the
    trained specialist's. Every path (generate, forward) reads the segmenter through `run_segmenter`."""
    if variant is None:
        yield model
        return
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; choose from {VARIANTS}")
    import copy

    import torch

    base = model.model
    original = base.run_segmenter
    degraded = None
    if variant == "degraded_segmenter":
        from safetensors.torch import load_file

        degraded = copy.deepcopy(base.segmenter)
        degraded.load_state_dict(load_file(Path(degraded_dir) / "segmenter.safetensors"), strict=True)
        degraded.eval()

    def run(seg_pixel_values):
        out = original(seg_pixel_values)
        if degraded is None:
            return {"maps": torch.zeros_like(out["maps"]), "features": out["features"]}
        trained_segmenter, base.segmenter = base.segmenter, degraded
        try:
            maps = original(seg_pixel_values)["maps"]
        finally:
            base.segmenter = trained_segmenter
        return {"maps": maps, "features": out["features"]}

    base.run_segmenter = run
    try:
        yield model
    finally:
        del base.run_segmenter  # the class's method again


def endpoint_files(path: Path, variant: str | None) -> dict[str, Path]:
    suffix = "" if variant is None else f".{variant}"
    return {"likelihood": path / f"likelihood{suffix}.json", "generation": path / f"generation{suffix}.json"}


def evaluate_endpoints(path: Path, test: list[dict], folder: Path, variant=None, degraded=None, batch_size=16):
    """Both endpoints of the trained run at `path` on the test studies, each written to its file (skipped when it
    exists): `likelihood[.variant].json` and `generation[.variant].json`."""
    files = endpoint_files(path, variant)
    if all(_done(f) for f in files.values()):
        return
    from PIL import Image

    from asarg.evaluation.clinical_efficacy import binarize, compute_ce
    from asarg.evaluation.label_likelihood import evaluate_label_likelihood
    from asarg.evaluation.report_labeler import label_reports
    from asarg.processing.inference import generate_reports, load_for_generation

    model, processor = load_for_generation(str(path))
    images = [Image.open(folder / rec["image"]).convert("L") for rec in test]
    refs = [rec["findings_text"] for rec in test]
    ids = [rec["id"] for rec in test]
    with seg_variant(model, variant, degraded):
        if not _done(files["likelihood"]):
            result = evaluate_label_likelihood(model, processor, images, refs, image_batch_size=batch_size)
            atomic_write(files["likelihood"], json.dumps({"study_ids": ids, **result}).encode())
        if not _done(files["generation"]):
            reports = generate_reports(model, processor, images, batch_size=batch_size)
            labels = binarize(label_reports(reports)).astype(int).tolist()
            result = {"study_ids": ids, "reports": reports, "labels": labels, "ce": compute_ce(reports, refs)}
            atomic_write(files["generation"], json.dumps(result).encode())


def run_seeds(out: Path, prepared: dict, regime: str, seeds, settings: AblationSettings, train: bool = True) -> None:
    """Train (unless `train=False`) and evaluate every run of `regime` at `seeds`."""
    folder = prepared["folders"]["test"]
    test = scored_studies(folder)
    for seed in seeds:
        init = None
        for arm in arms_at(seed, settings):
            path = run_dir(out, regime, seed, arm)
            if not trained(path):
                if not train:
                    continue
                init = init or init_for(out, prepared, regime, seed, settings)
                train_one(out, path, init[arm], seed, arm, prepared, settings)
            for variant in variants_at(seed, arm, settings):
                evaluate_endpoints(path, test, folder, variant, prepared["degraded"], settings.eval_batch_size)
            print(f"{regime} seed {seed} {arm}: done", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Looks: the tests and the stopping rules
# ----------------------------------------------------------------------------------------------------------------------


def _load(path: Path, endpoint: str, variant: str | None):
    files = endpoint_files(path, variant)
    key = "likelihood" if endpoint == "label_auroc" else "generation"
    if not _done(files[key]):
        return None
    data = json.loads(files[key].read_text())
    return np.asarray(data["scores"] if endpoint == "label_auroc" else data["labels"], dtype=float)


def _metric(endpoint: str, prepared: dict):
    """The run metric of `endpoint` against the test studies' reference labels (the project's labeler)."""
    from asarg.evaluation.clinical_efficacy import binarize
    from asarg.evaluation.label_likelihood import LABEL_SENTENCES, reference_labels
    from asarg.evaluation.report_labeler import label_reports
    from asarg.evaluation.significance import macro_auroc_metric, micro_f1_metric

    refs = [rec["findings_text"] for rec in scored_studies(prepared["folders"]["test"])]
    if endpoint == "label_auroc":
        return macro_auroc_metric(reference_labels(refs, list(LABEL_SENTENCES)))
    return micro_f1_metric(binarize(label_reports(refs)).astype(bool))


def compare(out, regime, arm, seeds, endpoint, metric, settings: AblationSettings, variant=None) -> dict | None:
    """`arm` (or its `variant` at inference) vs the baseline of the same seeds: the hierarchical bootstrap (primary
    test), the paired t over seeds and the pooled permutation over studies. None unless every run has its file."""
    from asarg.evaluation.significance import hierarchical_bootstrap, pooled_permutation_test, seeds_t_test

    arm_runs = [_load(run_dir(out, regime, s, arm), endpoint, variant) for s in seeds]
    base_runs = [_load(run_dir(out, regime, s, CONTROL), endpoint, None) for s in seeds]
    if not seeds or any(r is None for r in arm_runs + base_runs):
        return None
    boot = hierarchical_bootstrap(arm_runs, base_runs, metric, settings.n_resamples, settings.confidence_level, seed=0)
    ones = np.ones((1, len(arm_runs[0])))
    row = {
        "regime": regime,
        "arm": arm if variant is None else f"{arm} ({variant})",
        "variant": variant,
        "seeds": len(seeds),
        "test_studies": int(len(arm_runs[0])),
        "endpoint": endpoint,
        "arm_mean": float(np.mean([metric(r, ones)[0] for r in arm_runs])),
        "baseline_mean": float(np.mean([metric(r, ones)[0] for r in base_runs])),
        "delta": boot["delta"],
        "ci95": [boot["ci_low"], boot["ci_high"]],
        "p_hierarchical": boot["p_one_sided"],
        "per_seed_delta": boot["per_seed"],
        # Seeds as the unit with the test set fixed: does the gain hold across training runs on these studies?
        "seeds_t": seeds_t_test(arm_runs, base_runs, metric),
        # Studies as the unit with the runs fixed: do these trained runs differ on this population of studies?
        "pooled_permutation": pooled_permutation_test(
            arm_runs, base_runs, metric, settings.permutation_resamples, seed=0
        ),
    }
    if variant is not None:  # the same runs intact, for the size of what the variant takes away
        intact = [_load(run_dir(out, regime, s, arm), endpoint, None) for s in seeds]
        if all(r is not None for r in intact):
            vs = hierarchical_bootstrap(arm_runs, intact, metric, settings.n_resamples, settings.confidence_level)
            row["vs_intact"] = {"delta": vs["delta"], "ci95": [vs["ci_low"], vs["ci_high"]]}
    return row


def decide(row: dict | None, look_index: int, settings: AblationSettings) -> str:
    """The stopping rule of the pre-registration for the primary comparison at one look."""
    if row is None:
        return "incomplete"
    if row["p_hierarchical"] < settings.success_p[look_index]:
        return "success"
    if row["ci95"][1] < settings.futility_margin:
        return "futility"
    return "last look: inconclusive" if look_index == len(settings.looks) - 1 else "continue"


def look(out: Path, prepared: dict, n: int, settings: AblationSettings, stopped: dict | None = None) -> dict:
    """The look at `n` seeds: every comparison of every regime, and the primary decision per regime. A regime in
    `stopped` (regime -> its earlier look's record of it) is reported at the seeds it stopped at, its decision kept."""
    index = settings.looks.index(n)
    stopped = stopped or {}
    metrics = {e: _metric(e, prepared) for e in ENDPOINTS}
    rows, decisions = [], {}
    for regime in settings.regimes:
        if regime in stopped:
            rows += stopped[regime]["rows"]
            decisions[regime] = stopped[regime]["decision"]
            continue
        mine = regime_rows(out, regime, list(range(n)), metrics, settings)
        primary = next(
            (r for r in mine if (r["arm"], r["endpoint"]) == (PRIMARY_ARM, settings.primary_endpoint)), None
        )
        primary = primary if primary is not None and primary["seeds"] == n else None
        decision = {"look": n, "decision": decide(primary, index, settings), "success_p": settings.success_p[index]}
        rows += mine
        decisions[regime] = decision
    record = {"look": n, "primary_endpoint": settings.primary_endpoint, "decisions": decisions, "rows": rows}
    (out / "looks").mkdir(exist_ok=True)
    atomic_write(out / "looks" / f"look-{n}{_part(settings)}.json", json.dumps(record, indent=1).encode())
    return record


def regime_rows(out: Path, regime: str, seeds: list[int], metrics: dict, settings: AblationSettings) -> list[dict]:
    """Every arm (and extra row) of `regime` vs its baseline, on both endpoints, over the seeds each one runs at."""
    rows = []
    for arm in settings.arms:
        if arm == CONTROL:
            continue
        for endpoint in ENDPOINTS:
            for variant in variants_at(0, arm, settings):
                arm_seeds = [
                    s for s in seeds if arm in arms_at(s, settings) and variant in variants_at(s, arm, settings)
                ]
                row = compare(out, regime, arm, arm_seeds, endpoint, metrics[endpoint], settings, variant)
                if row is not None:
                    rows.append(row)
    return rows


def _part(settings: AblationSettings) -> str:
    """ "" for the whole design; "-<regime>" for a process that runs one regime (one core each)."""
    return "" if tuple(settings.regimes) == REGIMES else "-" + "-".join(settings.regimes)


def _segmenter_dice(path: Path) -> float | None:
    try:
        return json.loads((path / "dice.json").read_text())["mean_dice"]
    except (FileNotFoundError, KeyError, ValueError):
        return None


def run_ablation(
    out,
    settings: AblationSettings | None = None,
    max_seeds: int | None = None,
    train: bool = True,
    regimes: tuple[str, ...] | None = None,
):
    """Every look up to `max_seeds` seeds (all looks when None), regime by regime; a regime whose primary comparison
    stopped (success or futility) trains no more seeds. `train=False`: the looks of the finished runs only.
    `regimes`: only these (one process per regime uses two cores; their looks and summary carry the regime's name,
    and a final run over both writes the whole design's). Returns the summary (also `out/summary.json`)."""
    settings = settings or AblationSettings()
    if regimes:
        unknown = set(regimes) - set(settings.regimes)
        if unknown:
            raise ValueError(f"regimes {sorted(unknown)} are not in the design's {settings.regimes}")
        settings = replace(settings, regimes=tuple(r for r in settings.regimes if r in regimes))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps(asdict(replace(settings, regimes=REGIMES) if regimes else settings)))
    held = json.loads((out / "settings.json").read_text()) if (out / "settings.json").is_file() else None
    if held is not None and held != record:  # a pre-registered design must not change between runs of one folder
        differ = sorted(k for k in set(held) | set(record) if held.get(k) != record.get(k))
        raise ValueError(f"{out} holds runs of other settings (they differ in {differ}); give a new --out folder.")
    atomic_write(out / "settings.json", json.dumps(record, indent=2).encode())
    prepared = prepare(out, settings)
    stopped: dict = {}
    last = None
    for n in settings.looks:
        if max_seeds is not None and n > max_seeds:
            break
        for regime in settings.regimes:
            if regime not in stopped:
                run_seeds(out, prepared, regime, range(n), settings, train)
        last = look(out, prepared, n, settings, stopped)
        for regime, decision in last["decisions"].items():
            if regime not in stopped and decision["decision"] in ("success", "futility"):
                stopped[regime] = {"decision": decision, "rows": [r for r in last["rows"] if r["regime"] == regime]}
        if len(stopped) == len(settings.regimes):
            break
    summary = {
        "design": "docs/results/ablation/PREREGISTRATION.md",
        "settings": asdict(settings),
        "segmenter_dice": {
            "trained": _segmenter_dice(prepared["segmenter"]),
            "degraded": _segmenter_dice(prepared["degraded"]),
        },
        "look": None if last is None else last["look"],
        "decisions": None if last is None else last["decisions"],
        "rows": [] if last is None else last["rows"],
    }
    atomic_write(out / f"summary{_part(settings)}.json", json.dumps(summary, indent=1, default=list).encode())
    return summary


def markdown(summary: dict) -> str:
    lines = [
        "| regime | arm vs baseline | endpoint | seeds | studies | delta | 95% CI | p (hierarchical) | p (seeds t) "
        "| p (pooled perm.) |",
        "|---" * 10 + "|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['regime']} | {r['arm']} | {r['endpoint']} | {r['seeds']} | {r['test_studies']} | {r['delta']:+.4f} "
            f"| {r['ci95'][0]:+.4f} … {r['ci95'][1]:+.4f} | {r['p_hierarchical']:.3g} | {r['seeds_t']['p_one_sided']:.3g} "
            f"| {r['pooled_permutation']['p_one_sided']:.3g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asarg.experiments.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="results folder; a rerun continues where the last one stopped")
    p.add_argument("--quick", action="store_true", help="toy sizes: the whole pipeline in minutes")
    p.add_argument("--max-seeds", type=int, help="stop after the look at this many seeds (e.g. 8: the first look)")
    p.add_argument("--table-only", action="store_true", help="the looks from the finished runs only; train nothing")
    p.add_argument("--regime", nargs="+", choices=REGIMES, help="only these regimes (one process per regime)")
    args = p.parse_args(argv)
    settings = QUICK_ABLATION if args.quick else None
    summary = run_ablation(args.out, settings, args.max_seeds, not args.table_only, args.regime)
    print(json.dumps(summary["decisions"], indent=1))
    print(markdown(summary))
    return 0


__all__ = ["AblationSettings", "QUICK_ABLATION", "run_ablation", "seg_variant", "evaluate_endpoints", "look"]


if __name__ == "__main__":
    raise SystemExit(main())
