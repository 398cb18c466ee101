"""Parity: the converted CXAS-compatible segmenter reproduces the original CXAS code, from both of its sources.

cxas's network gets random weights (BatchNorm statistics randomised too, so that a mix-up of running_mean /
running_var or a dropped buffer shows); torchxrayvision's network loads the same weights (strictly). Each source's
state dict is saved as a `.pth` file in that source's layout and converted with `asarg convert-cxas`; logits and every
intermediate map are compared on one 512x512 input (max abs diff <= 1e-4). Needs the references from
`.ci/install_parity.sh`; one 512x512 forward per network (about 7-10 s each on 2 cores).
"""

from __future__ import annotations

import pytest
import torch
from reference_models import cxas_model, xrv_model

from asarg.convert_cxas import main
from modeling_asarg.convert_cxas_weights import load_converted_segmenter

TOLERANCE = 1e-4
HEAD_LEVELS = ("up1", "up2", "up3")
ENCODER_LEVELS = ("feats_1_map", "feats_2_map", "feats_3_map", "feats_4_map", "feats_last_map")


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
            module.num_batches_tracked.fill_(7)


def _reference_levels(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits, `feats` and every encoder / decoder map of the original network, from one forward (via hooks)."""
    caught = {}
    hooks = [model.backbone.register_forward_hook(lambda _m, _i, out: caught.update(out))]
    for name in HEAD_LEVELS:
        hooks.append(
            getattr(model.head, name).register_forward_hook(lambda _m, _i, out, n=name: caught.update({n: out}))
        )
    with torch.no_grad():
        caught.update(model._forward(x))
    for hook in hooks:
        hook.remove()
    return caught


def _compare(reference: dict, ours: dict, names) -> dict[str, float]:
    diffs = {}
    for name in names:
        assert ours[name].shape == reference[name].shape, name
        diffs[name] = (ours[name] - reference[name]).abs().max().item()
    assert reference["logits"].abs().max() > 1e-2, "degenerate reference output: the comparison would prove nothing"
    bad = {k: v for k, v in diffs.items() if v > TOLERANCE}
    assert not bad, f"max abs diff above {TOLERANCE}: {bad}"
    return diffs


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1234)
    return torch.randn(1, 3, 512, 512)  # an ImageNet-normalised 512x512 input, CXAS's input convention


@pytest.fixture(scope="module")
def cxas_reference(tmp_path_factory):
    """cxas's network with random weights, and those weights in CXAS's own checkpoint layout: {"model": state_dict}
    saved from DataParallel ("module." prefixes)."""
    torch.manual_seed(0)
    reference = cxas_model()
    _randomise_batchnorm(reference, seed=1)
    path = tmp_path_factory.mktemp("cxas") / "UNet_ResNet50_default.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    return reference, path


@pytest.fixture(scope="module")
def converted(cxas_reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    assert main([str(cxas_reference[1]), "--out", str(out)]) == 0
    return load_converted_segmenter(out)


@pytest.fixture(scope="module")
def our_levels(converted, image) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return converted.forward_levels(image)


def test_cxas_parity_logits_and_network_features(cxas_reference, converted, our_levels, image):
    assert converted.config.class_names[134] == "lung" and converted.feature_level == "feats"
    expected = _reference_levels(cxas_reference[0], image)
    assert our_levels["feats"].shape == (1, 128, 128, 128)  # the default projector input: CXAS's network features
    diffs = _compare(expected, our_levels, ["logits", "feats", *HEAD_LEVELS, *ENCODER_LEVELS])
    print(f"cxas parity max abs diff: {diffs}")


def test_torchxrayvision_parity_from_its_repack_layout(cxas_reference, converted, our_levels, image, tmp_path):
    reference = xrv_model()
    reference.load_state_dict(cxas_reference[0].state_dict(), strict=True)  # the same random weights
    # torchxrayvision's repack layout: the encoder one level less deep (`backbone.layerN`), no container.
    state = {k.replace("backbone.backbone.", "backbone.", 1): v for k, v in reference.state_dict().items()}
    torch.save(state, tmp_path / "xrv_repack.pth")
    out = tmp_path / "converted"
    assert main([str(tmp_path / "xrv_repack.pth"), "--out", str(out), "--feature-level", "feats_3_map"]) == 0

    from_xrv = load_converted_segmenter(out)
    assert from_xrv.feature_level == "feats_3_map" and from_xrv.config.feature_channels == 512
    ours = from_xrv.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in converted.state_dict().items()), "conversions disagree"
    # Identical weights, so `our_levels` (computed once, from the cxas conversion) are this segmenter's outputs too.
    expected = _reference_levels(reference, image)
    diffs = _compare(expected, our_levels, ["logits", "feats", *HEAD_LEVELS, *ENCODER_LEVELS])
    print(f"torchxrayvision parity max abs diff: {diffs}")
