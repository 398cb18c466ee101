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
