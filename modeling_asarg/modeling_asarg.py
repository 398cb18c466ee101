"""ASaRG: LLaVA whose multi-modal projector also reads anatomy segmentation, per visual token.

For every visual token the projector's first Linear sees
    [ vision features (LLaVA) | segmenter features (C, area-pooled) | K segmentation maps (area-pooled coverage) ]
and nothing else changes. The seg columns of `linear_1` start at zero, so a model built from a LLaVA checkpoint
gives exactly that checkpoint's logits until it is trained (`AsargForConditionalGeneration.from_llava`).

Segmentation comes either from the built-in segmenter (`seg_pixel_values`, run once per forward / once per
`generate` call, at prefill) or precomputed (`seg_maps (B,K,h,w)`, `seg_features (B,C,h',w')`, any resolution).

Hub file: imports only torch, transformers, the standard library and `.configuration_asarg`. Parameter names are
LLaVA's (`model.vision_tower`, `model.multi_modal_projector.linear_1/2`, `model.language_model`, `lm_head`) plus
`model.segmenter` when a built-in segmenter is configured.
"""

from collections import OrderedDict
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
)
from transformers.utils import logging

from .configuration_asarg import CXAS_ARCHITECTURE, CXAS_FEATURE_LEVELS, AsargConfig

logger = logging.get_logger(__name__)

SEG_INPUT_NAMES = ("seg_pixel_values", "seg_maps", "seg_features")

# Written into config.json on save so that every Auto class resolves to these files with trust_remote_code.
AUTO_MAP = {
    "AutoConfig": "configuration_asarg.AsargConfig",
    "AutoModel": "modeling_asarg.AsargModel",
    "AutoModelForImageTextToText": "modeling_asarg.AsargForConditionalGeneration",
}


# --------------------------------------------------------------------------------------------------------------------
# Built-in segmenter
# --------------------------------------------------------------------------------------------------------------------


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

    def __init__(self, config: dict):
        super().__init__()
        widths = list(config["widths"])
        if len(widths) < 2:
            raise ValueError(f"segmenter_config['widths'] needs at least two levels, got {widths}.")
        self.inc = _DoubleConv(config["in_channels"], widths[0])
        self.down = nn.ModuleList(_DoubleConv(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        up_out = widths[:-1][::-1]
        up_out[-1] = config["feature_channels"]
        up_in = [w_deep + w_skip for w_deep, w_skip in zip([widths[-1]] + up_out[:-1], widths[:-1][::-1])]
        self.up = nn.ModuleList(_DoubleConv(cin, cout) for cin, cout in zip(up_in, up_out))
        self.out = nn.Conv2d(config["feature_channels"], config["num_classes"], 1)

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
    is the level named by `segmenter_config["feature_level"]` (default `"feats"`: CXAS's 128-channel decoder output at
    stride 4). `forward_levels` returns every level, for parity checks and analysis.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.feature_level = config.get("feature_level", "feats")
        if self.feature_level not in CXAS_FEATURE_LEVELS:
            raise ValueError(
                f"Unknown CXAS feature_level {self.feature_level!r}; choose one of {list(CXAS_FEATURE_LEVELS)}."
            )
        self.backbone = _CxasResNet50Encoder(config.get("in_channels", 3))
        self.head = _CxasUNetHead(config["num_classes"])

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


def build_segmenter(segmenter_config: dict) -> nn.Module:
    architecture = segmenter_config.get("architecture", "unet")
    if architecture not in SEGMENTER_ARCHITECTURES:
        raise ValueError(
            f"Unknown segmenter architecture {architecture!r}; choose one of {sorted(SEGMENTER_ARCHITECTURES)}."
        )
    return SEGMENTER_ARCHITECTURES[architecture](segmenter_config)


# --------------------------------------------------------------------------------------------------------------------
# Projector and models
# --------------------------------------------------------------------------------------------------------------------


class AsargMultiModalProjector(LlavaMultiModalProjector):
    """LLaVA's two-layer MLP whose first Linear takes `seg_input_width` extra columns (none when seg is off)."""

    def __init__(self, config: AsargConfig):
        super().__init__(config)
        self.vision_width = self.linear_1.in_features
        self.seg_width = config.seg_input_width
        if self.seg_width:
            self.linear_1 = nn.Linear(
                self.vision_width + self.seg_width, self.linear_1.out_features, bias=config.multimodal_projector_bias
            )
            self.linear_1.first_seg_column = self.vision_width

    def forward(self, image_features: torch.Tensor, seg_tokens: torch.Tensor | None = None) -> torch.Tensor:
        if self.seg_width:
            if seg_tokens is None or seg_tokens.shape[-1] != self.seg_width:
                got = None if seg_tokens is None else tuple(seg_tokens.shape)
                raise ValueError(f"The projector expects seg tokens of width {self.seg_width}, got {got}.")
            image_features = torch.cat([image_features, seg_tokens.to(image_features.dtype)], dim=-1)
        return super().forward(image_features)


class AsargPreTrainedModel(LlavaPreTrainedModel):
    config: AsargConfig
    config_class = AsargConfig

    def _init_weights(self, module):
        super()._init_weights(module)
        # Seg columns start at zero: seg inputs are inert until trained, and a model grown from LLaVA equals it.
        # Marked on the Linear itself: param-less modules such as the projector are skipped for custom code.
        first_seg_column = getattr(module, "first_seg_column", None)
        if first_seg_column is not None and not getattr(module.weight, "_is_hf_initialized", False):
            with torch.no_grad():
                module.weight[:, first_seg_column:].zero_()

    def save_pretrained(self, *args, **kwargs):
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(*args, **kwargs)


def _pool_to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B,C,h,w) at any resolution -> (B, gh*gw, C) by area averaging (coverage fraction for binary maps)."""
    return F.adaptive_avg_pool2d(x.float(), grid).flatten(2).transpose(1, 2)


class AsargModel(AsargPreTrainedModel, LlavaModel):
    def __init__(self, config: AsargConfig):
        super().__init__(config)
        self.multi_modal_projector = AsargMultiModalProjector(config)
        self.segmenter = build_segmenter(config.segmenter_config) if config.segmenter_config else None
        if self.segmenter is not None and config.freeze_segmenter:
            self.segmenter.requires_grad_(False)
        self.post_init()

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen specialist must not update its BatchNorm statistics while the rest trains.
        if self.segmenter is not None and self.config.freeze_segmenter:
            self.segmenter.eval()
        return self

    # ---- segmentation inputs -> per-token columns -------------------------------------------------------------------

    def run_segmenter(self, seg_pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the built-in segmenter: `{"maps": (B,K,H,W), "features": (B,C,H,W)}`."""
        if self.segmenter is None:
            raise ValueError(
                "seg_pixel_values were given but this model has no built-in segmenter (config.segmenter_config is "
                "None). Pass precomputed `seg_maps` / `seg_features` instead."
            )
        frozen = self.config.freeze_segmenter
        param = next(self.segmenter.parameters())
        with torch.no_grad() if frozen else nullcontext():
            out = self.segmenter(seg_pixel_values.to(param.device, param.dtype))
        logits = out["logits"]
        maps = (logits > 0).to(logits.dtype) if self.config.seg_map_activation == "threshold" else logits.sigmoid()
        return {"maps": self.select_seg_classes(maps), "features": out["features"]}

    def select_seg_classes(self, maps: torch.Tensor) -> torch.Tensor:
        """Segmenter maps (B,N,H,W) -> the K maps the projector reads (`seg_class_indices` / `seg_class_groups`).

        Done at full resolution, before area pooling: the union of two masks is not the max of their coverages.
        """
        selection = self.config.seg_class_selection
        if selection is None:
            return maps
        if self.config.seg_class_groups is None:
            return maps[:, [members[0] for members in selection]]
        reduce = torch.amax if self.config.seg_group_reduction == "max" else torch.mean
        return torch.stack([reduce(maps[:, members], dim=1) for members in selection], dim=1)

    def _missing_seg_inputs(self, what: str) -> None:
        message = (
            f"This ASaRG model reads {what} (use_seg_maps={self.config.use_seg_maps}, "
            f"use_seg_features={self.config.use_seg_features}) but none reached it. Pass `seg_pixel_values` (from "
            "AsargProcessor, needs a built-in segmenter) or precomputed `seg_maps`/`seg_features`. When training with "
            "TRL, set `remove_unused_columns=False` so the collator keeps these columns."
        )
        if self.training or self.config.missing_seg_inputs == "error":
            raise ValueError(message)
        logger.warning(message + " Using zeros: the seg columns contribute nothing for this batch.")

    def _check_seg_tensor(self, name: str, x: torch.Tensor, channels: int, batch: int) -> None:
        if x.dim() != 4 or x.shape[0] != batch or x.shape[1] != channels:
            raise ValueError(
                f"`{name}` must have shape (batch={batch}, {channels}, height, width); got {tuple(x.shape)}."
            )

    def get_seg_tokens(
        self,
        pixel_values: torch.Tensor,
        seg_pixel_values: torch.Tensor | None = None,
        seg_maps: torch.Tensor | None = None,
        seg_features: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Per-visual-token seg columns `(B, gh*gw, C+K)` on the vision patch grid, or None when seg is off."""
        config = self.config
        if not config.seg_input_width:
            if any(x is not None for x in (seg_pixel_values, seg_maps, seg_features)):
                logger.warning_once("Segmentation inputs were given to a model with seg off (plain LLaVA): ignored.")
            return None
        batch = pixel_values.shape[0]
        patch = config.vision_config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        need_maps = config.use_seg_maps and seg_maps is None
        need_features = config.use_seg_features and seg_features is None
        if (need_maps or need_features) and seg_pixel_values is not None:
            seg = self.run_segmenter(seg_pixel_values)
            seg_maps = seg["maps"] if seg_maps is None else seg_maps
            seg_features = seg["features"] if seg_features is None else seg_features
        elif need_maps or need_features:
            self._missing_seg_inputs("segmentation maps" if need_maps else "segmentation features")
            return pixel_values.new_zeros(batch, grid[0] * grid[1], config.seg_input_width)

        columns = []
        if config.use_seg_features:
            self._check_seg_tensor("seg_features", seg_features, config.seg_feature_channels, batch)
            columns.append(_pool_to_grid(seg_features, grid))
        if config.use_seg_maps:
            self._check_seg_tensor("seg_maps", seg_maps, config.num_seg_classes, batch)
            columns.append(_pool_to_grid(seg_maps, grid))
        return torch.cat(columns, dim=-1)

    # ---- vision + seg -> projected image tokens ---------------------------------------------------------------------

    def _select_vision_features(self, hidden_states, layer, strategy) -> torch.Tensor:
        layers = [layer] if isinstance(layer, int) else list(layer)
        selected = [hidden_states[i][:, 1:] if strategy == "default" else hidden_states[i] for i in layers]
        return torch.cat(selected, dim=-1)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        seg_pixel_values: torch.Tensor | None = None,
        seg_maps: torch.Tensor | None = None,
        seg_features: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ):
        """LLaVA's image features, with the seg columns concatenated before the projector.

        The seg arguments must be in this signature: `generate` pre-encodes images by calling this method with
        exactly the kwargs its signature names, once, before prefill.
        """
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        kwargs.pop("return_dict", None)
        kwargs.pop("output_hidden_states", None)
        image_outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True, **kwargs)
        vision_features = self._select_vision_features(image_outputs.hidden_states, layer, strategy)

        seg_tokens = self.get_seg_tokens(pixel_values, seg_pixel_values, seg_maps, seg_features)
        if seg_tokens is not None and strategy == "full":
            # The CLS token has no location: it gets zero seg columns.
            seg_tokens = torch.cat([seg_tokens.new_zeros(seg_tokens.shape[0], 1, seg_tokens.shape[2]), seg_tokens], 1)
        if seg_tokens is not None and seg_tokens.shape[1] != vision_features.shape[1]:
            raise ValueError(
                f"The vision tower gave {vision_features.shape[1]} tokens per image but the patch grid has "
                f"{seg_tokens.shape[1]}; ASaRG needs a square-patch vision tower whose tokens form that grid."
            )
        image_features = self.multi_modal_projector(vision_features, seg_tokens)
        image_outputs.pooler_output = list(image_features)
        return image_outputs

    def encode_images(
        self,
        pixel_values,
        mm_encoder_outputs=None,
        seg_pixel_values=None,
        seg_maps=None,
        seg_features=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
    ) -> dict:
        """Pre-encode images (with seg) into LLaVA's `mm_encoder_outputs`, so the parent forward never sees seg."""
        mm_encoder_outputs = dict(mm_encoder_outputs or {})  # generate passes {} when it did not pre-encode
        if pixel_values is None:
            return mm_encoder_outputs
        if mm_encoder_outputs.get("image") is not None:
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs['image'] at the same time.")
        mm_encoder_outputs["image"] = self.get_image_features(
            pixel_values,
            seg_pixel_values=seg_pixel_values,
            seg_maps=seg_maps,
            seg_features=seg_features,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
        )
        return mm_encoder_outputs

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        image_sizes=None,
        mm_encoder_outputs=None,
        seg_pixel_values=None,
        seg_maps=None,
        seg_features=None,
        **kwargs,
    ):
        # Seg handling lives here (not only in the CausalLM): TRL's fused-loss path calls `model.model(...)` directly.
        mm_encoder_outputs = self.encode_images(
            pixel_values,
            mm_encoder_outputs,
            seg_pixel_values,
            seg_maps,
            seg_features,
            vision_feature_layer,
            vision_feature_select_strategy,
        )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


class AsargForConditionalGeneration(AsargPreTrainedModel, LlavaForConditionalGeneration):
    def __init__(self, config: AsargConfig):
        # LLaVA's __init__ builds a LlavaModel that is replaced right away; under from_pretrained both are built on
        # the meta device, so this costs nothing there.
        super().__init__(config)
        self.model = AsargModel(config)
        self.post_init()

    def get_image_features(self, pixel_values, seg_pixel_values=None, seg_maps=None, seg_features=None, **kwargs):
        return self.model.get_image_features(
            pixel_values, seg_pixel_values=seg_pixel_values, seg_maps=seg_maps, seg_features=seg_features, **kwargs
        )

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        labels=None,
        logits_to_keep=0,
        image_sizes=None,
        mm_encoder_outputs=None,
        seg_pixel_values=None,
        seg_maps=None,
        seg_features=None,
        **kwargs,
    ):
        mm_encoder_outputs = self.model.encode_images(
            pixel_values,
            mm_encoder_outputs,
            seg_pixel_values,
            seg_maps,
            seg_features,
            vision_feature_layer,
            vision_feature_select_strategy,
        )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            logits_to_keep=logits_to_keep,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration=False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        # generate normally consumes seg inputs when it pre-encodes images; should it not, they must still reach only
        # the prefill step, like pixel_values (decode steps have no image tokens).
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in SEG_INPUT_NAMES:
                model_inputs.pop(name, None)
        return model_inputs

    # ---- growing ASaRG out of a LLaVA checkpoint ---------------------------------------------------------------------

    @classmethod
    def from_llava(cls, source, llava_kwargs: dict | None = None, **config_overrides):
        """Build ASaRG from a LLaVA model or checkpoint (path or Hub id; legacy key names included).

        `config_overrides` are ASaRG config fields, e.g. `use_seg_maps=True, num_seg_classes=159,
        seg_feature_channels=128, segmenter_config=None`. Every LLaVA weight is reused by name; `linear_1` gains
        zero-initialised seg columns, so the result has the LLaVA model's logits until it is trained. A built-in
        segmenter (if configured) starts from random weights. `llava_kwargs` go to `LlavaForConditionalGeneration
        .from_pretrained` (e.g. `dtype`). Any LLaVA weight that does not find its place raises.
        """
        if isinstance(source, LlavaForConditionalGeneration):
            llava = source
        else:
            llava = LlavaForConditionalGeneration.from_pretrained(source, **(llava_kwargs or {}))
        config_dict = {k: v for k, v in llava.config.to_dict().items() if k not in {"model_type", "architectures"}}
        config = AsargConfig(**{**config_dict, **config_overrides})

        with torch.device("meta"):
            model = cls(config)
        state = dict(llava.state_dict())
        key = "model.multi_modal_projector.linear_1.weight"
        old = state[key]
        grown = old.new_zeros(old.shape[0], old.shape[1] + config.seg_input_width)
        grown[:, : old.shape[1]] = old
        state[key] = grown
        result = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in result.missing_keys if not k.startswith("model.segmenter.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"LLaVA weights do not map onto ASaRG: missing {missing}, unexpected {result.unexpected_keys}."
            )
        cls._materialise_leftovers(model, llava, old.dtype, old.device)
        model.generation_config = llava.generation_config
        return model

    @staticmethod
    def _materialise_leftovers(model, llava, dtype, device) -> None:
        # Non-persistent buffers (e.g. rotary inv_freq, position ids) are not in the state dict: take LLaVA's.
        source_buffers = dict(llava.named_buffers())
        for name, buffer in list(model.named_buffers()):
            if buffer.is_meta and name in source_buffers:
                owner_name, _, attr = name.rpartition(".")
                model.get_submodule(owner_name)._buffers[attr] = source_buffers[name]
        if model.model.segmenter is not None:
            segmenter = build_segmenter(model.config.segmenter_config).to(device=device, dtype=dtype)
            segmenter.requires_grad_(not model.config.freeze_segmenter)
            model.model.segmenter = segmenter
        model.tie_weights()
        still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if still_meta:
            raise RuntimeError(f"from_llava left tensors unset: {still_meta[:5]}")


__all__ = [
    "AsargForConditionalGeneration",
    "AsargModel",
    "AsargMultiModalProjector",
    "AsargPreTrainedModel",
    "AsargCxasUNetSegmenter",
    "AsargUNetSegmenter",
    "SEGMENTER_ARCHITECTURES",
    "build_segmenter",
]
