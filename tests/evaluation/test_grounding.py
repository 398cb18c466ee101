"""Tracing report sentences to anatomy by map ablation (evaluation/tracing.py, grounded_report.py, grounding_score.py):
tiny models, CPU, offline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from asarg.evaluation.grounded_report import _mask_box, _resize_maps
from asarg.evaluation.grounding import (
    SentenceTrace,
    StructureDrop,
    generate_without,
    ground_report,
    match_findings,
    score_grounding,
    segment_image,
    split_sentences,
    structure_groups,
    to_radfact,
    token_sentence_ids,
    trace_report,
    trace_to_json,
)
from asarg.evaluation.grounding_score import _chance
from asarg.evaluation.tracing import _chat_text, _report_token_positions
from asarg.processing.inference import generate_reports
from tests.conftest import xray_like

REPORT = "The heart size is normal. The lungs are clear.\nNo pleural effusion or pneumothorax."
DRIVER = 2  # the one map channel that drives the output in `driven_model`


def hand_maps() -> torch.Tensor:
    """(1, 4, 32, 32) binary maps: four different rectangles, so every channel gives distinct seg tokens."""
    maps = torch.zeros(1, 4, 32, 32)
    maps[0, 0, :16, :16] = 1
    maps[0, 1, :16, 16:] = 1
    maps[0, 2, 8:28, 4:20] = 1
    maps[0, 3, 20:, :] = 1
    return maps


@pytest.fixture
def driven_model(make_asarg):
    """Only channel DRIVER has non-zero projector columns: it alone can change the output."""
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False, use_seg_features=False)
    seg_columns = model.model.multi_modal_projector.seg_linear.weight
    with torch.no_grad():
        seg_columns.zero_()
        seg_columns[:, DRIVER].normal_(0, 3.0)
    return model, processor


# ---- sentences and tokens ---------------------------------------------------------------------------------------------


def test_split_sentences_keeps_spans():
    report = "  Heart is 2.5 cm wide. Lungs clear!\nFINDINGS none\n\nNo effusion?  Last one"
    got = split_sentences(report)
    assert [t for t, _ in got] == [
        "Heart is 2.5 cm wide.",
        "Lungs clear!",
        "FINDINGS none",
        "No effusion?",
        "Last one",
    ]
    assert all(report[s:e] == text for text, (s, e) in got)
    assert split_sentences("   \n ") == []


def test_token_sentence_ids_uses_last_character():
    spans = [(0, 5), (6, 10)]  # "Aa bb" "cc d"
    offsets = [(0, 0), (0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (5, 6)]
    assert token_sentence_ids(offsets, spans) == [-1, 0, 0, 1, 1, -1, -1]


def test_report_tokens_map_to_their_sentences(make_asarg):
    _, processor = make_asarg()
    full, start = _chat_text(processor, "Findings?", REPORT)
    assert full[start : start + len(REPORT)] == REPORT
    encoded = processor(images=xray_like(), text=full, return_tensors="pt")
    sentences = split_sentences(REPORT)
    tokens = _report_token_positions(processor, full, start, encoded["input_ids"], [s for _, s in sentences])
    ids = encoded["input_ids"][0]
    for sid, (text, _) in enumerate(sentences):
        mine = [p for p, s in zip(tokens["positions"], tokens["sentences"]) if s == sid]
        assert mine == list(range(mine[0], mine[-1] + 1))  # contiguous
        assert processor.tokenizer.decode(ids[mine]).strip() == text


# ---- tracing ------------------------------------------------------------------------------------------------------------


def test_one_driving_map_ranks_first_and_inert_maps_drop_exactly_zero(driven_model):
    model, processor = driven_model
    traces = trace_report(model, processor, xray_like(), REPORT, seg_maps=hand_maps(), batch_size=3)
    assert [t.text for t in traces] == [t for t, _ in split_sentences(REPORT)]
    positive = 0
    for trace in traces:
        drops = {s.name: s.drop for s in trace.ranking}
        assert drops[f"class_{DRIVER}"] != 0.0
        assert all(d == 0.0 for name, d in drops.items() if name != f"class_{DRIVER}")
        if drops[f"class_{DRIVER}"] > 0:
            positive += 1
            assert trace.top == f"class_{DRIVER}"
        assert trace.ranking[0].normalised_drop == pytest.approx(trace.ranking[0].drop / trace.n_tokens)
    assert positive >= 1  # the case is not vacuous

    groups = {"with_driver": [0, DRIVER], "without": ["class_1", "class_3"]}
    grouped = trace_report(model, processor, xray_like(), REPORT, structures=groups, seg_maps=hand_maps())
    for trace, single in zip(grouped, traces):
        drops = {s.name: s.drop for s in trace.ranking}
        assert drops["without"] == 0.0
        assert drops["with_driver"] == pytest.approx({s.name: s.drop for s in single.ranking}[f"class_{DRIVER}"])


def test_log_likelihood_matches_a_plain_forward(driven_model):
    model, processor = driven_model
    traces = trace_report(model, processor, xray_like(), REPORT, prompt="Findings?", seg_maps=hand_maps())
    full, start = _chat_text(processor, "Findings?", REPORT)
    encoded = processor(images=xray_like(), text=full, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded, seg_maps=hand_maps()).logits[0].log_softmax(-1)
    tokens = _report_token_positions(processor, full, start, encoded["input_ids"], [t.span for t in traces])
    for sid, trace in enumerate(traces):
        mine = [p for p, s in zip(tokens["positions"], tokens["sentences"]) if s == sid]
        expected = sum(float(logits[p - 1, encoded["input_ids"][0, p]]) for p in mine)
        assert trace.log_likelihood == pytest.approx(expected, abs=1e-4)
        assert trace.n_tokens == len(mine)


def test_segmenter_runs_once_and_batching_does_not_change_drops(make_asarg):
    model, processor = make_asarg(live_seg=True)  # built-in segmenter, maps and features
    calls = []
    handle = model.model.segmenter.register_forward_hook(lambda *args: calls.append(1))
    try:
        batched = trace_report(model, processor, xray_like(), REPORT, batch_size=8)
        assert len(calls) == 1
        single = trace_report(model, processor, xray_like(), REPORT, batch_size=1)
        assert len(calls) == 2
    finally:
        handle.remove()
    for a, b in zip(batched, single):
        da, db = dict((s.name, s.drop) for s in a.ranking), dict((s.name, s.drop) for s in b.ranking)
        assert da.keys() == db.keys()
        assert all(abs(da[k] - db[k]) <= 1e-5 for k in da)
        assert any(d != 0 for d in da.values())
    assert model.training is False


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_vision_tower_runs_once_and_drops_equal_the_per_row_forward(make_asarg, strategy):
    model, processor = make_asarg(live_seg=True, vision_feature_select_strategy=strategy)  # segmenter, maps, features
    images = []  # images per vision-tower forward
    handle = model.model.vision_tower.register_forward_hook(lambda m, args, out: images.append(args[0].shape[0]))
    try:
        shared = trace_report(model, processor, xray_like(), REPORT, batch_size=3)
        assert images == [1]  # 4 structures in 2 forwards of 1 + 3 and 1 + 1 rows: still one image through the tower
        per_row = trace_report(model, processor, xray_like(), REPORT, batch_size=3, _per_row_vision=True)
        assert images == [1, 4, 2]  # the old path: the tower runs on every row
    finally:
        handle.remove()
    for a, b in zip(shared, per_row):
        assert a.log_likelihood == pytest.approx(b.log_likelihood, abs=1e-5)
        da, db = dict((s.name, s.drop) for s in a.ranking), dict((s.name, s.drop) for s in b.ranking)
        assert da.keys() == db.keys() and any(d != 0 for d in da.values())
        assert torch.allclose(torch.tensor([da[k] for k in da]), torch.tensor([db[k] for k in da]), atol=1e-5)


# ---- grounded output ----------------------------------------------------------------------------------------------------


def test_resize_maps_undoes_the_square_padding():
    maps = torch.zeros(1, 1, 32, 32)
    maps[0, 0, :, 8:16] = 1  # columns 8..15 of the 32-pixel square
    # A 30 x 40 (W x H) image sits in a 40-pixel square at left = 5: square columns [10, 20) -> image columns [5, 15).
    resized = _resize_maps(maps, (30, 40), padded=True)
    assert resized.shape == (1, 40, 30) and resized.dtype == np.float32
    assert _mask_box(resized[0] > 0.5) == [5, 0, 15, 40]
    assert _mask_box(_resize_maps(maps, (30, 40), padded=False)[0] > 0.5)[1::2] == [0, 40]  # squashed: full height
    assert _mask_box(np.zeros((4, 4), bool)) is None


def test_segment_image_gives_the_segmenters_maps_at_the_image_size(make_asarg):
    model, processor = make_asarg()
    image = xray_like(40, 30)
    maps = segment_image(model, processor, image)
    assert maps.shape == (4, 40, 30) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1
    seg = model.model.run_segmenter(processor(images=image, return_tensors="pt")["seg_pixel_values"])["maps"]
    assert np.allclose(maps, _resize_maps(seg.detach(), (30, 40), padded=True))
    assert model.training is False


def test_ground_report_schema_labels_boxes_and_one_segmenter_pass(make_asarg):
    model, processor = make_asarg(live_seg=True)
    image = xray_like(40, 30)
    report = "Small left pleural effusion. No pneumothorax.\nThe heart size is normal."
    calls = []
    handle = model.model.segmenter.register_forward_hook(lambda *args: calls.append(1))
    try:
        grounded = ground_report(model, processor, image, report, top=2, structures={"pair": [0, 1], "two": [2]})
    finally:
        handle.remove()
    assert len(calls) == 1
    assert set(grounded) == {"report", "image_size", "labels", "sentences"} and grounded["image_size"] == [30, 40]
    sentences = grounded["sentences"]
    assert [s["text"] for s in sentences] == [t for t, _ in split_sentences(report)]
    assert all(report[s["span"][0] : s["span"][1]] == s["text"] for s in sentences)
    assert sentences[0]["labels"] == {"Pleural Effusion": "positive"}
    assert sentences[1]["labels"] == {"Pneumothorax": "negative"}
    assert grounded["labels"]["Pleural Effusion"] == "positive"
    maps = segment_image(model, processor, image) > 0.5
    expected = {"pair": _mask_box(maps[0] | maps[1]), "two": _mask_box(maps[2])}  # a group: its members' union
    for sentence in sentences:
        assert [s["name"] for s in sentence["structures"]] in (["pair", "two"], ["two", "pair"])
        assert all(s["box"] == expected[s["name"]] for s in sentence["structures"])
        assert all(isinstance(s["score"], float) for s in sentence["structures"])
    json.dumps(grounded)  # JSON-ready


def test_ground_report_generates_when_no_report_is_given(make_asarg):
    model, processor = make_asarg(live_seg=True)
    generated = generate_reports(model, processor, [xray_like()], max_new_tokens=6)[0]
    grounded = ground_report(model, processor, xray_like(), max_new_tokens=6, structures="groups")
    assert grounded["report"] == generated  # precomputed segmentation gives the model's own report
    assert {s["name"] for s in grounded["sentences"][0]["structures"]} == {f"class_{i}" for i in range(4)}
    assert structure_groups(model.config) == {}  # "groups" fell back to the maps: tiny channels form no CXAS group


def test_ground_report_with_given_masks(driven_model):
    model, processor = driven_model  # no built-in segmenter, maps only
    masks = np.zeros((4, 40, 30), np.float32)
    masks[DRIVER, 10:20, 3:9] = 1
    grounded = ground_report(model, processor, xray_like(40, 30), REPORT, top=4, segmentation_maps=masks)
    for sentence in grounded["sentences"]:
        boxes = {s["name"]: s["box"] for s in sentence["structures"]}
        assert boxes == {f"class_{DRIVER}": [3, 10, 9, 20]} | {f"class_{i}": None for i in range(4) if i != DRIVER}
    with pytest.raises(ValueError, match="no built-in segmenter"):
        ground_report(model, processor, xray_like(), REPORT)


def test_to_radfact_boxes_only_asserted_sentences_normalised():
    box = {"name": "lungs", "score": 1.0, "box": [5, 10, 15, 40]}
    grounded = {
        "report": "...",
        "image_size": [30, 40],
        "sentences": [
            {"text": "Small effusion.", "labels": {"Pleural Effusion": "positive"}, "structures": [box, box]},
            {"text": "No pneumothorax.", "labels": {"Pneumothorax": "negative"}, "structures": [box]},
            {"text": "Possible edema.", "labels": {"Edema": "uncertain"}, "structures": [{**box, "box": None}]},
        ],
    }
    normalised = {"x_min": 5 / 30, "y_min": 10 / 40, "x_max": 15 / 30, "y_max": 1.0}
    assert to_radfact(grounded) == [
        {"text": "Small effusion.", "boxes": [normalised]},
        {"text": "No pneumothorax.", "boxes": None},
        {"text": "Possible edema.", "boxes": None},  # RadFact refuses an empty list: None
    ]
    assert to_radfact(grounded, top=2)[0]["boxes"] == [normalised, normalised]


def test_generate_without_feeds_the_named_maps_as_zero(make_asarg):
    model, processor = make_asarg(live_seg=True)
    seen = []
    seg_linear = model.model.multi_modal_projector.seg_linear
    handle = seg_linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        dropped = generate_without(model, processor, xray_like(), ["class_1", "class_3"], max_new_tokens=4)
        full = generate_without(model, processor, xray_like(), [], max_new_tokens=4)
    finally:
        handle.remove()
    maps = slice(model.config.seg_feature_channels, None)  # the seg columns: [features | maps]
    assert seen[0][..., maps][..., [1, 3]].abs().sum() == 0 and seen[0][..., maps][..., [0, 2]].abs().sum() > 0
    assert seen[-1][..., maps][..., [1, 3]].abs().sum() > 0
    assert isinstance(dropped, str)
    assert full == generate_reports(model, processor, [xray_like()], max_new_tokens=4)[0]
    with pytest.raises(ValueError, match="Unknown structure"):
        generate_without(model, processor, xray_like(), ["spleen"])


def test_untraceable_inputs_raise(make_asarg):
    model, processor = make_asarg(use_seg_maps=False)
    with pytest.raises(ValueError, match="use_seg_maps=False"):
        trace_report(model, processor, xray_like(), REPORT)
    model, processor = make_asarg(builtin_segmenter=False, use_seg_features=False)
    with pytest.raises(ValueError, match="no built-in segmenter"):
        trace_report(model, processor, xray_like(), REPORT)
    with pytest.raises(ValueError, match="Unknown segmentation channel"):
        trace_report(model, processor, xray_like(), REPORT, structures=["heart"], seg_maps=hand_maps())


SIDED_REPORT = "Small right pleural effusion. The heart size is normal."


@pytest.fixture
def finding_model(make_asarg):
    """Finding tokens with sides for effusion; the left verdict is certain, the right one absent."""
    model, processor = make_asarg(
        live_seg=True,
        finding_loss_weight=1.0,
        finding_tokens=True,
        finding_sides=["Pleural Effusion"],
        num_finding_labels=16,
    )
    with torch.no_grad():
        model.model.finding_tokens.queries.normal_(0, 3.0)  # a peaked attention, as after training
        model.model.finding_tokens.bias[14], model.model.finding_tokens.bias[15] = -10.0, 10.0
    return model, processor


def test_with_finding_tokens_tracing_follows_the_finding_classifier(finding_model):
    """The default for a model with finding tokens: the sentence is traced to its finding token (the side the verdicts
    say, not the side word), each structure scores its share of that token's attention (its coverage-weighted sum),
    a sentence without a finding gets no ranking, and the log-likelihoods are the model's own."""
    model, processor = finding_model
    traces = trace_report(model, processor, xray_like(), SIDED_REPORT)
    effusion, heart = traces
    assert effusion.method == "finding" and effusion.finding == "Pleural Effusion (left)"
    assert effusion.confidence > 0.99 and heart.finding is None and heart.ranking == []
    base = model.model
    encoded = processor(images=xray_like(), text=processor.image_token, return_tensors="pt")
    with torch.no_grad():
        seg = base.run_segmenter(encoded["seg_pixel_values"])
        grid = (encoded["pixel_values"].shape[-1] // model.config.vision_config.patch_size,) * 2
        maps = torch.nn.functional.adaptive_avg_pool2d(seg["maps"].float(), grid)
        tokens = base.project_image_tokens(
            base.get_vision_features(encoded["pixel_values"]),
            base.get_seg_tokens(encoded["pixel_values"], seg_maps=seg["maps"], seg_features=seg["features"]),
        )
        attention = base.finding_tokens.attention(tokens[:, :-16])[0, 15, -grid[0] * grid[1] :]
    names = list(model.config.seg_class_names)
    expected = {name: float((attention * maps[0, i].flatten()).sum()) for i, name in enumerate(names)}
    assert {d.name: d.drop for d in effusion.ranking} == pytest.approx(expected, abs=1e-5)
    assert [d.drop for d in effusion.ranking] == sorted(expected.values(), reverse=True)
    by_maps = trace_report(model, processor, xray_like(), SIDED_REPORT, method="maps")
    assert [t.log_likelihood for t in traces] == pytest.approx([t.log_likelihood for t in by_maps], abs=1e-4)
    assert by_maps[0].method == "maps" and by_maps[0].finding is None


def test_the_finding_method_needs_finding_tokens(make_asarg):
    model, processor = make_asarg(live_seg=True)
    with pytest.raises(ValueError, match="has none"):
        trace_report(model, processor, xray_like(), REPORT, method="finding")
    with pytest.raises(ValueError, match="Unknown tracing method"):
        trace_report(model, processor, xray_like(), REPORT, method="occlusion")


def test_trace_to_json():
    trace = SentenceTrace("Mild cardiomegaly.", (0, 18), -3.5, 4, [StructureDrop("heart", 2.0, 0.5)])
    assert trace_to_json([trace]) == {
        "sentences": [
            {
                "text": "Mild cardiomegaly.",
                "span": [0, 18],
                "log_likelihood": -3.5,
                "n_tokens": 4,
                "method": "maps",
                "finding": None,
                "confidence": None,
                "structures": [{"name": "heart", "drop": 2.0, "normalised_drop": 0.5}],
            }
        ]
    }


# ---- scoring ------------------------------------------------------------------------------------------------------------


def ranked(text: str, names: list[str]) -> SentenceTrace:
    return SentenceTrace(
        text, (0, len(text)), 0.0, 1, [StructureDrop(n, float(-i), float(-i)) for i, n in enumerate(names)]
    )


def test_match_findings_uses_labels_negation_and_device_words():
    findings = [
        {"kind": "ett", "observations": {"Support Devices": 1}, "location": ["trachea"]},
        {"kind": "ng_tube", "observations": {"Support Devices": 1}, "location": ["stomach"]},
        {"kind": "pneumothorax", "observations": {"Pneumothorax": 1}, "location": ["right upper zone lung"]},
    ]
    assert match_findings("Nasogastric tube tip is in the stomach.", findings) == [1]
    assert match_findings("Small right pneumothorax.", findings) == [2]
    assert match_findings("No pneumothorax.", findings) == []


def test_chance_baseline():
    hits, rr = _chance(4, 2, (1, 3))
    assert hits == {1: pytest.approx(0.5), 3: pytest.approx(1.0)}
    assert rr == pytest.approx(0.5 + (2 / 6) / 2 + (1 / 6) / 3)


def test_score_grounding_equals_hand_computation():
    names = ["heart", "right lung base", "trachea", "stomach", "spine"]
    study1 = (
        [
            ranked("Mild cardiomegaly.", ["heart", "spine", "trachea", "stomach", "right lung base"]),  # rank 1
            ranked("Small right pleural effusion.", ["spine", "heart", "right lung base", "trachea", "stomach"]),  # 3
            ranked(
                "Nasogastric tube tip is in the stomach.", ["trachea", "spine", "heart", "right lung base", "stomach"]
            ),  # rank 5
            ranked("No pneumothorax.", names),  # asserts nothing: not scored
            ranked(
                "Endotracheal tube terminates 2 cm above the carina.",
                ["trachea", "heart", "spine", "stomach", "right lung base"],
            ),  # rank 1
        ],
        [
            {"kind": "cardiomegaly", "observations": {"Cardiomegaly": 1}, "location": ["heart"]},
            {
                "kind": "effusion",
                "observations": {"Pleural Effusion": 1},
                "location": ["right lung base", "right hemidiaphragm"],
            },
            {"kind": "ett", "observations": {"Support Devices": 1}, "location": ["trachea"]},
            {"kind": "ng_tube", "observations": {"Support Devices": 1}, "location": ["stomach"]},
        ],
    )
    study2 = (
        [
            ranked("Small left pleural effusion.", ["heart", "bases", "spine"]),  # rank 2 through the group
            ranked("Fracture of the left 5th posterior rib.", ["heart", "bases", "spine"]),  # no traced location
        ],
        [
            {"kind": "effusion", "observations": {"Pleural Effusion": 1}, "location": ["left lung base"]},
            {"kind": "rib_fracture", "observations": {"Fracture": 1}, "location": ["posterior 5th rib left"]},
        ],
    )
    members = {"bases": ["right lung base", "left lung base"]}
    score = score_grounding([study1[0], study2[0]], [study1[1], study2[1]], structure_members=members)
    assert [c["rank"] for c in score.cases] == [1, 3, 5, 1, 2]
    assert score.n_sentences == 5 and score.n_unscorable == 1
    assert score.hit_at == {1: pytest.approx(2 / 5), 3: pytest.approx(4 / 5)}
    assert score.mrr == pytest.approx((1 + 1 / 3 + 1 / 5 + 1 + 1 / 2) / 5)
    assert score.chance_hit_at == {1: pytest.approx((4 / 5 + 1 / 3) / 5), 3: pytest.approx((4 * 3 / 5 + 1) / 5)}
    assert score.chance_mrr == pytest.approx(
        (4 * (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5 + (1 + 1 / 2 + 1 / 3) / 3) / 5
    )

    single = score_grounding(*study1, structure_members=members)  # one study, not nested
    assert single.n_sentences == 4 and single.mrr == pytest.approx((1 + 1 / 3 + 1 / 5 + 1) / 4)
    assert math.isnan(score_grounding([], []).mrr)
