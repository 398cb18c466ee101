"""The built-in segmenters of ASaRG: a small pure-torch U-Net and a CXAS-compatible ResNet-50 U-Net (159 anatomy
classes, CXAS's parameter names), each returning `{"logits": (B,N,H,W), "features": (B,C,h,w)}`.

Hub file: imports only torch, the standard library and `.configuration_asarg` (it is copied next to the weights with
`modeling_asarg.py`, which imports it).
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_asarg import CXAS_ARCHITECTURE, AsargSegmenterConfig


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class AsargUNetSegmenter(nn.Module):
    """A small U-Net: `widths` gives the encoder channels per level (len(widths)-1 down-samplings).

    Returns `{"logits": (B,K,H,W), "features": (B,C,H,W)}`, where `features` is the last decoder block (C =
    `feature_channels`), the analogue of CXAS's "network features" that feed its 1x1 classifier.
    """

    def __init__(self, config: AsargSegmenterConfig):
        super().__init__()
        widths = list(config.widths)
        self.inc = _DoubleConv(config.in_channels, widths[0])
        self.down = nn.ModuleList(_DoubleConv(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        up_out = widths[:-1][::-1]
        up_out[-1] = config.feature_channels
        up_in = [w_deep + w_skip for w_deep, w_skip in zip([widths[-1]] + up_out[:-1], widths[:-1][::-1])]
        self.up = nn.ModuleList(_DoubleConv(cin, cout) for cin, cout in zip(up_in, up_out))
        self.out = nn.Conv2d(config.feature_channels, config.num_classes, 1)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = [self.inc(pixel_values)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return {"logits": self.out(x), "features": x}


# ---- CXAS-compatible segmenter -------------------------------------------------------------------------------------
# A pure-torch copy of CXAS's `BackboneUNet("UNet_ResNet50_default", 159)` (cxas 0.0.20; torchxrayvision's
# `chestx_anatomy.UNetResNet50` is the same network). Module and parameter names are CXAS's own (`backbone.backbone.
# layer0..4`, `head.up1..4`, `head.out`), so a CXAS state dict loads as is and the converter
# (`modeling_asarg/convert_cxas_weights.py`) only unwraps containers and checks that every key matches.


class _ResNetBottleneck(nn.Module):
    """torchvision's ResNet-50 `Bottleneck` (v1.5: the stride sits on the 3x3 conv), same parameter names."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _resnet_stage(in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [_ResNetBottleneck(in_channels, planes, stride)]
    layers += [_ResNetBottleneck(planes * _ResNetBottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class _CxasResNet50Encoder(nn.Module):
    """CXAS's `Backbone`: torchvision's ResNet-50 cut into `layer0` (stem, stride 4) and `layer1..4`.

    Returns CXAS's feature dict: `feats_1_map` (64 ch, /4), `feats_2_map` (256, /4), `feats_3_map` (512, /8),
    `feats_4_map` (1024, /16), `feats_last_map` (2048, /32).
    """

    LEVELS = ("feats_1_map", "feats_2_map", "feats_3_map", "feats_4_map", "feats_last_map")

    def __init__(self, in_channels: int = 3):
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = [("layer0", stem)]
        in_ch = 64
        for index, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
            stages.append((f"layer{index}", _resnet_stage(in_ch, planes, blocks, stride)))
            in_ch = planes * _ResNetBottleneck.expansion
        self.backbone = nn.Sequential(OrderedDict(stages))  # nested as in CXAS: keys read backbone.backbone.*

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        levels = {}
        for name, stage in zip(self.LEVELS, self.backbone):
            x = stage(x)
            levels[name] = x
        return levels


class _CxasConv(nn.Module):
    """CXAS `Conv`: 3x3 conv (with bias) -> BatchNorm -> ReLU, kept under the attribute name `conv`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _CxasDoubleConv(nn.Module):
    """CXAS `DoubleConv`: two (3x3 conv with bias -> BatchNorm -> ReLU), under the attribute name `double_conv`."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _CxasUpInit(nn.Module):
    """CXAS `UpInit` (first decoder block): conv the deepest map, upsample, concatenate [skip, x], DoubleConv."""

    def __init__(self, temp_channels: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _CxasConv(in_channels, temp_channels)
        self.conv2 = _CxasDoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.cat([skip, _upsample_to(self.conv1(x), skip)], dim=1))


class _CxasUp(nn.Module):
    """CXAS `Up`: upsample, concatenate [skip, x] (skip first, as CXAS does), DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = _CxasDoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, _upsample_to(x, skip)], dim=1))


class _CxasOutConv(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _CxasUNetHead(nn.Module):
    """CXAS `UNetHead(2048, 128, num_classes)`: decoder widths 2048 -> 512 -> 256 -> 64 -> 128, then a 1x1 classifier."""

    def __init__(self, num_classes: int, in_channels: int = 2048, feature_channels: int = 128):
        super().__init__()
        self.up1 = _CxasUpInit(in_channels // 2, in_channels, in_channels // 4)
        self.up2 = _CxasUp(in_channels // 4 * 2, in_channels // 8)
        self.up3 = _CxasUp(in_channels // 8 * 2, in_channels // 32)
        self.up4 = _CxasUp(in_channels // 32 * 2, feature_channels)
        self.out = _CxasOutConv(feature_channels, num_classes)


class AsargCxasUNetSegmenter(nn.Module):
    """The CXAS anatomy segmenter (ResNet-50 U-Net, 159 overlapping classes), in pure torch with CXAS's parameter names.

    Input: (B,3,512,512) ImageNet-normalised. Returns `{"logits": (B,K,H,W), "features": (B,C,h,w)}` where `features`
    is the level named by `segmenter_config.feature_level` (default `"feats"`: CXAS's 128-channel decoder output at
    stride 4). `forward_levels` returns every level, for parity checks and analysis.
    """

    def __init__(self, config: AsargSegmenterConfig):
        super().__init__()
        self.feature_level = config.feature_level
        self.backbone = _CxasResNet50Encoder(config.in_channels)
        self.head = _CxasUNetHead(config.num_classes)

    def forward_levels(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        levels = self.backbone(pixel_values)
        levels["up1"] = self.head.up1(levels["feats_last_map"], levels["feats_4_map"])
        levels["up2"] = self.head.up2(levels["up1"], levels["feats_3_map"])
        levels["up3"] = self.head.up3(levels["up2"], levels["feats_2_map"])
        levels["feats"] = self.head.up4(levels["up3"], levels["feats_1_map"])
        # Upsample the features, then classify, in CXAS's order (the two commute only up to rounding).
        levels["logits"] = self.head.out(_upsample_to(levels["feats"], pixel_values))
        return levels

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        levels = self.forward_levels(pixel_values)
        return {"logits": levels["logits"], "features": levels[self.feature_level]}


SEGMENTER_ARCHITECTURES = {"unet": AsargUNetSegmenter, CXAS_ARCHITECTURE: AsargCxasUNetSegmenter}


def build_segmenter(segmenter_config: AsargSegmenterConfig | dict) -> nn.Module:
    """The built-in segmenter described by `segmenter_config` (an `AsargSegmenterConfig`, or its settings as a dict)."""
    if isinstance(segmenter_config, dict):
        segmenter_config = AsargSegmenterConfig(**segmenter_config)
    return SEGMENTER_ARCHITECTURES[segmenter_config.architecture](segmenter_config)


__all__ = ["AsargCxasUNetSegmenter", "AsargUNetSegmenter", "SEGMENTER_ARCHITECTURES", "build_segmenter"]
