"""Map dropout (`seg_map_dropout`): in training, whole maps of a sample are removed at random, so that any subset of
maps is an input the model has seen; at inference nothing is dropped."""

from __future__ import annotations

import pytest
import torch


def _inputs(batch: int, classes: int = 4, channels: int = 8):
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, 32, 32)
    return pixels, torch.rand(batch, classes, 16, 16) * 0.5 + 0.5, torch.randn(batch, channels, 8, 8)


def test_training_drops_whole_maps_at_the_configured_rate_and_leaves_features(make_asarg):
    model, _ = make_asarg(seg_map_dropout=0.5)
    pixels, maps, features = _inputs(256)
    model.train()
    tokens = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    map_columns, feature_columns = tokens[..., 8:], tokens[..., :8]
    dropped = (map_columns == 0).all(dim=1)  # (batch, K): a dropped map is zero on every patch
    assert ((map_columns == 0) == dropped[:, None, :]).all(), "maps are dropped whole, never patch by patch"
    assert 0.4 < dropped.float().mean() < 0.6
    model.eval()
    reference = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    assert torch.equal(feature_columns, reference[..., :8])
    assert torch.equal(
        map_columns[~dropped[:, None, :].expand_as(map_columns)],
        reference[..., 8:][~dropped[:, None, :].expand_as(map_columns)],
    )


def test_inference_never_drops(make_asarg):
    model, _ = make_asarg(seg_map_dropout=0.5)
    plain, _ = make_asarg()
    pixels, maps, features = _inputs(16)
    model.eval()
    tokens = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    assert torch.equal(tokens, plain.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features))


@pytest.mark.parametrize("p", [-0.1, 1.0, 2.0])
def test_a_rate_that_is_not_a_probability_is_refused(make_asarg, p):
    with pytest.raises(ValueError, match="seg_map_dropout"):
        make_asarg(seg_map_dropout=p)


# ---- group dropout (`seg_group_dropout`) and all-maps dropout (`seg_all_maps_dropout`): what tracing feeds ----------


def _region_inputs(batch: int):
    """Maps 0-1 cover the left half of the film, maps 2-3 the right half: groups [[0, 1], [2, 3]]."""
    pixels, _, features = _inputs(batch)
    maps = torch.zeros(batch, 4, 16, 16)
    maps[:, :2, :, :8] = 1.0
    maps[:, 2:, :, 8:] = 1.0
    return pixels, maps, features


def test_a_dropped_group_loses_its_maps_and_the_features_of_the_patches_it_covers(make_asarg):
    model, _ = make_asarg(seg_group_dropout=0.5, seg_dropout_groups=[[0, 1], [2, 3]])
    pixels, maps, features = _region_inputs(256)
    model.eval()
    reference = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    model.train()
    tokens = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    map_columns, feature_columns = tokens[..., 8:], tokens[..., :8]
    dropped = (map_columns == 0).all(dim=1)  # (batch, K)
    assert torch.equal(dropped[:, 0], dropped[:, 1]) and torch.equal(dropped[:, 2], dropped[:, 3]), "whole groups"
    assert 0.4 < dropped[:, 0].float().mean() < 0.6 and 0.4 < dropped[:, 2].float().mean() < 0.6
    left = torch.arange(16) % 4 < 2  # patches of the 4 x 4 grid in the left half (columns 0-1)
    for side, group, other in ((left, 0, 2), (~left, 2, 0)):
        gone = dropped[:, group] & ~dropped[:, other]
        assert (feature_columns[gone][:, side] == 0).all(), "features of the removed group's region are removed"
        assert torch.equal(feature_columns[gone][:, ~side], reference[..., :8][gone][:, ~side]), "others stay"
    kept = ~dropped[:, 0] & ~dropped[:, 2]
    assert torch.equal(tokens[kept], reference[kept])


def test_all_maps_dropout_removes_every_map_of_a_sample_and_keeps_features(make_asarg):
    model, _ = make_asarg(seg_all_maps_dropout=0.5)
    pixels, maps, features = _inputs(256)
    model.eval()
    reference = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    model.train()
    tokens = model.model.get_seg_tokens(pixels, seg_maps=maps, seg_features=features)
    empty = (tokens[..., 8:] == 0).flatten(1).all(dim=1)
    assert 0.4 < empty.float().mean() < 0.6
    assert torch.equal(tokens[~empty], reference[~empty]) and torch.equal(tokens[..., :8], reference[..., :8])


def test_groups_default_to_the_anatomy_groups_found_among_the_class_names(make_asarg):
    from modeling_asarg import CXAS_ANATOMY_GROUPS

    left_lung, heart = CXAS_ANATOMY_GROUPS["left lung"][0], CXAS_ANATOMY_GROUPS["heart"][0]
    model, _ = make_asarg(seg_group_dropout=0.2, seg_class_names=[left_lung, "unknown", heart, "other"])
    assert sorted(model.config.seg_dropout_groups) == [[0], [2]]
    with pytest.raises(ValueError, match="no CXAS anatomy group matches"):
        make_asarg(seg_group_dropout=0.2)  # class_0 ... class_3


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seg_group_dropout": 1.0, "seg_dropout_groups": [[0]]}, "seg_group_dropout"),
        ({"seg_all_maps_dropout": -0.1}, "seg_all_maps_dropout"),
        ({"seg_group_dropout": 0.2, "seg_dropout_groups": [[0, 9]]}, "seg_dropout_groups"),
        ({"seg_group_dropout": 0.2, "seg_dropout_groups": [[0]], "use_seg_maps": False}, "use_seg_maps"),
    ],
)
def test_bad_dropout_settings_are_refused_by_name(make_asarg, fields, message):
    with pytest.raises(ValueError, match=message):
        make_asarg(**fields)
