"""The performance suite (benchmarks/perf/run.py) on tiny shapes: its JSON, its tables, the segmenter once per generate;
and the hot-path changes it measured keep the model's behaviour. No timing is asserted: this machine is shared."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "perf"))

import perf_latency  # noqa: E402
import perf_params  # noqa: E402
import perf_report  # noqa: E402
import run  # noqa: E402

from modeling_asarg.modeling_asarg import _pool_to_grid  # noqa: E402

LATENCY_ROW = {"shape", "batch", "seg", "generate"}
FORWARD = {"llava_ms", "asarg_ms", "ratio", "ratio_min", "ratio_max", "rounds", "calls_per_round", "ratios"}
GENERATE = {"llava_tokens_per_s", "asarg_tokens_per_s", "throughput_ratio", "rounds", "new_tokens", "same_tokens"}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """`run.py --quick` for the cheap sections at the tiny shape, one round each."""
    out = tmp_path_factory.mktemp("perf") / "performance.json"
    sections = "parameters,latency,profile"
    assert run.main(["--quick", "--only", sections, "--shapes", "tiny", "--rounds", "1", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_writes_the_schema(quick_report):
    assert quick_report["schema"] == run.SCHEMA and quick_report["errors"] == {}
    assert {"cpu", "logical_cpus", "torch", "transformers", "load_average"} <= set(quick_report["machine"])
    (params,) = quick_report["sections"]["parameters"]
    assert params["shape"] == "tiny" and set(params["arms"]) == {"features", "maps", "features+maps"}
    assert params["arms"]["features+maps"]["added"] == 32 * (8 + 4)  # text hidden x (C + K): the seg columns alone
    rows = quick_report["sections"]["latency"]
    settings = {"precomputed", "precomputed-grid", "segmenter"}
    assert {(r["batch"], r["seg"]) for r in rows} == {(b, s) for b in (1, 8) for s in settings}
    for row in rows:
        assert LATENCY_ROW <= set(row) and FORWARD <= set(row["forward"]) and GENERATE <= set(row["generate"])
        assert row["generate"]["same_tokens"], "ASaRG grown from LLaVA must write LLaVA's tokens"
        assert row.get("segmenter_runs_per_generate", 1) == 1
    assert set(quick_report["sections"]["profile"]) >= {"forward_llava", "forward_asarg", "prefill_asarg"}


def test_the_tables_render_and_the_markdown_block_is_replaced_in_place(quick_report, tmp_path):
    tables = perf_report.markdown(quick_report)
    assert "**Parameters added per arm**" in tables and "| tiny | 8 | segmenter |" in tables
    notes = tmp_path / "performance.md"
    notes.write_text(f"# Notes\n\n{run.MARKER_START}\nold\n{run.MARKER_END}\n\nHand-written analysis.\n")
    run.rewrite_generated(notes, tables)
    text = notes.read_text()
    assert "old" not in text and tables in text and text.endswith("Hand-written analysis.\n")


def test_the_committed_report_renders():
    """docs/results/performance.json is the full suite's output: every section it holds must still render."""
    path = REPO / "docs" / "results" / "performance.json"
    report = json.loads(path.read_text())
    assert report["schema"] == run.SCHEMA
    assert perf_report.markdown(report)


def test_the_segmenter_runs_once_per_generate(tmp_path):
    llava, asarg = perf_latency.build_pair("tiny", segmenter=True)
    inputs = perf_latency.make_inputs("tiny", llava.config, 2)
    assert perf_latency.segmenter_runs_per_generate(asarg, inputs, new_tokens=3) == 1


def test_the_7b_shape_is_counted_from_its_config_alone():
    counted = perf_params.parameters("llava-1.5-7b")
    assert counted["llava_params"] == 7_063_427_072  # llava-hf/llava-1.5-7b-hf
    assert counted["arms"]["features+maps"]["added"] == 4096 * (128 + 159)


# ---- the hot-path changes keep the model's behaviour ---------------------------------------------------------------


@pytest.mark.parametrize(
    "size, grid", [((128, 128), (4, 4)), ((64, 48), (8, 8)), ((24, 24), (24, 24)), ((37, 50), (4, 4))]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.float16])
def test_block_pooling_is_adaptive_pooling(size, grid, dtype):
    """Whole-multiple sizes average blocks by reshaping; the values are adaptive pooling's, to float rounding."""
    x = torch.rand(2, 3, *size)
    x = x > 0.5 if dtype == torch.bool else x.to(dtype)
    expected = torch.nn.functional.adaptive_avg_pool2d(x.float(), grid).flatten(2).transpose(1, 2)
    got = _pool_to_grid(x, grid)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_maps_are_checked_again_after_an_in_place_change(make_asarg):
    """The range check reads precomputed maps on every forward (no cache): an in-place change is seen."""
    model, _ = make_asarg(builtin_segmenter=False)
    ids = torch.tensor([[1] + [model.config.image_token_id] * 16 + [10, 11]])
    pixels, features, maps = torch.randn(1, 3, 32, 32), torch.randn(1, 8, 4, 4), torch.rand(1, 4, 8, 8)
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels, seg_maps=maps, seg_features=features)
        maps[0, 0, 0, 0] = -0.5  # inside [0, 1] once pooled: only the check of the raw maps sees it
        with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
            model(input_ids=ids, pixel_values=pixels, seg_maps=maps, seg_features=features)
        maps.mul_(0).add_(255)
        with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
            model(input_ids=ids, pixel_values=pixels, seg_maps=maps, seg_features=features)


def test_forward_names_llavas_arguments_then_the_seg_inputs():
    """`forward` keeps LLaVA's arguments in LLaVA's order and names the seg inputs after them, so the Trainer, TRL and
    generate see every argument they always saw, and a Trainer's column filter keeps the seg columns."""
    import inspect

    from transformers import LlavaForConditionalGeneration

    from modeling_asarg import AsargForConditionalGeneration

    ours = list(inspect.signature(AsargForConditionalGeneration.forward).parameters)
    llava = list(inspect.signature(LlavaForConditionalGeneration.forward).parameters)
    assert ours[: len(llava) - 1] == llava[:-1] and ours[-1] == llava[-1] == "kwargs"
    assert ours[len(llava) - 1 : -1] == ["seg_pixel_values", "seg_maps", "seg_features", "finding_labels"]
