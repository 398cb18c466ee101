"""ASaRG configuration.

Hub file: imports only the standard library, `transformers` and `.cxas_asarg` (it is copied next to the weights by
`save_pretrained` and loaded with `trust_remote_code=True`; it must not import anything of this repository).
"""

import dataclasses
from typing import Any, Literal

from transformers import LlavaConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .cxas_asarg import CXAS_ANATOMY_GROUPS, CXAS_ARCHITECTURE, CXAS_CLASS_NAMES, CXAS_FEATURE_LEVELS  # noqa: F401

# The built-in segmenters; `modeling_asarg.SEGMENTER_ARCHITECTURES` maps each name to its module.
SEGMENTER_ARCHITECTURE_NAMES = ("unet", CXAS_ARCHITECTURE)
# ImageNet statistics: CXAS normalises its input with them, and so does `AsargProcessor` for `seg_pixel_values`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNET_WIDTHS = (32, 64, 128, 256)
UNET_FEATURE_CHANNELS = 128


class AsargSegmenterConfig(PreTrainedConfig):
    r"""The built-in segmenter of an ASaRG model (`AsargConfig.segmenter_config`); its settings are checked here only.

    Args:
        architecture (`str`, *optional*, defaults to `"unet"`):
            `"unet"` (`AsargUNetSegmenter`, a small pure-torch U-Net) or `"cxas_unet_resnet50"`
            (`AsargCxasUNetSegmenter`, the ResNet-50 U-Net of CXAS).
        in_channels (`int`, *optional*, defaults to 3):
            Channels of `seg_pixel_values`.
        num_classes (`int`, *optional*):
            Number of output maps; defaults to `len(class_names)`, else to CXAS's 159.
        class_names (`list[str]`, *optional*):
            Names of the output maps, in channel order.
        widths (`list[int]`, *optional*):
            `"unet"` only: encoder channels per level, at least two levels (default `[32, 64, 128, 256]`).
        feature_level (`str`, *optional*):
            `"cxas_unet_resnet50"` only: the intermediate map returned as `features`, a key of `CXAS_FEATURE_LEVELS`
            (default `"feats"`, the 128-channel decoder output CXAS calls its network features).
        feature_channels (`int`, *optional*):
            Channels of `features`: 128 by default for `"unet"`; for CXAS the width of `feature_level`, which a given
            value must equal.
        image_size (`int`, *optional*, defaults to 512):
            Side of the square `seg_pixel_values`.
        image_mean (`list[float]`, *optional*, defaults to ImageNet's mean):
            Per-channel mean that `seg_pixel_values` are normalised with.
        image_std (`list[float]`, *optional*, defaults to ImageNet's standard deviation):
            Per-channel standard deviation that `seg_pixel_values` are normalised with.
        source (`dict`, *optional*):
            Where converted weights came from (`{"file": ..., "sha256": ...}`, set by `convert_cxas_weights`).

    `default_segmenter_config()` and `cxas_segmenter_config()` build the two usual ones; `to_settings()` gives the
    fields that are set as a plain dict.
    """

    model_type = "asarg_segmenter"

    architecture: str = "unet"
    in_channels: int = 3
    num_classes: int | None = None
    class_names: list[str] | None = None
    widths: list[int] | tuple[int, ...] | None = None
    feature_level: str | None = None
    feature_channels: int | None = None
    image_size: int = 512
    image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN
    image_std: list[float] | tuple[float, ...] = IMAGENET_STD
    source: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.architecture not in SEGMENTER_ARCHITECTURE_NAMES:
            raise ValueError(
                f"Unknown segmenter architecture {self.architecture!r}; choose one of "
                f"{list(SEGMENTER_ARCHITECTURE_NAMES)}."
            )
        self._resolve_classes()
        if self.architecture == CXAS_ARCHITECTURE:
            self._resolve_cxas_features()
        else:
            self._resolve_unet_features()
        self.image_mean = [float(value) for value in self.image_mean]
        self.image_std = [float(value) for value in self.image_std]

    def _resolve_classes(self) -> None:
        if self.class_names is not None:
            self.class_names = list(self.class_names)
            if self.num_classes is None:
                self.num_classes = len(self.class_names)
            elif len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"segmenter_config has {len(self.class_names)} class_names for num_classes={self.num_classes}; "
                    "give one name per segmenter output channel."
                )
        elif self.num_classes is None:
            self.num_classes = len(CXAS_CLASS_NAMES)
        if self.num_classes < 1:
            raise ValueError(f"segmenter_config['num_classes'] must be >= 1, got {self.num_classes}.")

    def _resolve_cxas_features(self) -> None:
        if self.widths is not None:
            raise ValueError(
                "segmenter_config['widths'] is for the 'unet' architecture; CXAS's U-Net widths are fixed."
            )
        level = "feats" if self.feature_level is None else self.feature_level
        if level not in CXAS_FEATURE_LEVELS:
            raise ValueError(f"Unknown CXAS feature_level {level!r}; choose one of {list(CXAS_FEATURE_LEVELS)}.")
        channels = CXAS_FEATURE_LEVELS[level][0]
        if self.feature_channels is not None and self.feature_channels != channels:
            raise ValueError(
                f"segmenter_config['feature_channels']={self.feature_channels} but the CXAS level {level!r} has "
                f"{channels} channels; use cxas_segmenter_config(feature_level={level!r})."
            )
        self.feature_level, self.feature_channels = level, channels

    def _resolve_unet_features(self) -> None:
        if self.feature_level is not None:
            raise ValueError(
                "segmenter_config['feature_level'] is for the CXAS architecture; the 'unet' segmenter returns its "
                "last decoder block."
            )
        self.widths = [int(width) for width in (UNET_WIDTHS if self.widths is None else self.widths)]
        if len(self.widths) < 2:
            raise ValueError(f"segmenter_config['widths'] needs at least two levels, got {self.widths}.")
        if self.feature_channels is None:
            self.feature_channels = UNET_FEATURE_CHANNELS

    def to_settings(self) -> dict[str, Any]:
        """The segmenter's own settings (the fields above that are set) as a plain, JSON-ready dict."""
        inherited = {field.name for field in dataclasses.fields(PreTrainedConfig)}
        names = [field.name for field in dataclasses.fields(self) if field.name not in inherited]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def default_segmenter_config(
    num_classes: int = len(CXAS_CLASS_NAMES),
    feature_channels: int = UNET_FEATURE_CHANNELS,
    widths: tuple[int, ...] = UNET_WIDTHS,
    image_size: int = 512,
) -> AsargSegmenterConfig:
    """The built-in pure-torch U-Net segmenter (`AsargUNetSegmenter`), ImageNet-normalised input as CXAS."""
    return AsargSegmenterConfig(
        architecture="unet",
        num_classes=num_classes,
        widths=list(widths),
        feature_channels=feature_channels,
        image_size=image_size,
    )


def cxas_segmenter_config(feature_level: str = "feats", class_names: list[str] | None = None) -> AsargSegmenterConfig:
    """The CXAS-compatible segmenter (`AsargCxasUNetSegmenter`): ResNet-50 U-Net, 512x512 ImageNet-normalised
    input, one logit map per class. `feature_level` picks the intermediate map the projector reads (see
    `CXAS_FEATURE_LEVELS`); `class_names` name the segmenter's output channels (CXAS's 159 by default)."""
    names = list(CXAS_CLASS_NAMES if class_names is None else class_names)
    return AsargSegmenterConfig(
        architecture=CXAS_ARCHITECTURE, class_names=names, feature_level=feature_level, image_size=512
    )


def _class_index(name_or_index: str | int, names: list[str] | tuple[str, ...]) -> int:
    if isinstance(name_or_index, int):
        if not 0 <= name_or_index < len(names):
            raise ValueError(f"Class index {name_or_index} is out of range for {len(names)} segmenter classes.")
        return name_or_index
    if name_or_index not in names:
        close = [n for n in names if name_or_index.lower() in n.lower()][:5]
        raise ValueError(f"Unknown class name {name_or_index!r}; names are CXAS's, e.g. {close or list(names[:3])}.")
    return names.index(name_or_index)


def cxas_class_index(name: str) -> int:
    """CXAS channel index of a class name; a misspelt name raises `ValueError` with close matches."""
    return _class_index(name, CXAS_CLASS_NAMES)


def cxas_seg_config(
    classes: list[str | int] | None = None,
    groups: str | dict[str, list[str | int]] | None = None,
    feature_level: str = "feats",
    builtin_segmenter: bool = True,
    group_reduction: str = "max",
) -> dict[str, Any]:
    """`AsargConfig` / `from_llava` keyword arguments for the paper's specialist (CXAS) and a choice of classes.

    classes: None = all 159 maps; else a subset by CXAS name or index (the projector reads them in this order).
    groups: `"anatomy"` (`CXAS_ANATOMY_GROUPS`) or {group name: [member names or indices]}: one map per group, the
        `group_reduction` ("max" = union, or "mean") of its members. Exclusive with `classes`.
    feature_level: which CXAS intermediate map feeds the projector (`CXAS_FEATURE_LEVELS`; default "feats").
    builtin_segmenter: include the CXAS segmenter (`segmenter_config`); False for models fed precomputed maps.
    """
    if classes is not None and groups is not None:
        raise ValueError("Give either `classes` (a subset) or `groups` (merged maps), not both.")
    segmenter = cxas_segmenter_config(feature_level)
    kwargs: dict[str, Any] = {
        "seg_feature_channels": segmenter.feature_channels,
        "segmenter_config": segmenter if builtin_segmenter else None,
        "seg_group_reduction": group_reduction,
    }
    if groups is not None:
        groups = dict(CXAS_ANATOMY_GROUPS) if groups == "anatomy" else groups
        if not isinstance(groups, dict):
            raise ValueError(f"groups must be 'anatomy' or a dict name -> members, got {groups!r}.")
        kwargs["seg_class_groups"] = [
            [_class_index(m, CXAS_CLASS_NAMES) for m in members] for members in groups.values()
        ]
        kwargs["seg_class_names"] = list(groups)
    elif classes is not None:
        kwargs["seg_class_indices"] = [_class_index(c, CXAS_CLASS_NAMES) for c in classes]
        kwargs["seg_class_names"] = [CXAS_CLASS_NAMES[i] for i in kwargs["seg_class_indices"]]
    else:
        kwargs["seg_class_names"] = list(CXAS_CLASS_NAMES)
    kwargs["num_seg_classes"] = len(kwargs["seg_class_names"])
    return kwargs


def llava_config_kwargs(config: PreTrainedConfig) -> dict[str, Any]:
    """A LLaVA (or ASaRG) config's fields as `AsargConfig` keyword arguments: its `to_dict()` without the keys that
    name the model class (`model_type`, `architectures`)."""
    return {key: value for key, value in config.to_dict().items() if key not in {"model_type", "architectures"}}


class AsargConfig(LlavaConfig):
    r"""Configuration of ASaRG: LLaVA whose projector also reads anatomy segmentation per visual token.

    All LLaVA fields are inherited. Added fields:

    use_seg_features (`bool`): concatenate the segmenter's intermediate feature map (C channels) to every visual token.
    use_seg_maps (`bool`): concatenate the K per-class segmentation maps (area-pooled coverage fractions).
        With both switches off the model is exactly LLaVA (same parameters, same logits).
    num_seg_classes (`int`, *optional*): K, the number of segmentation maps the projector reads. Leave it unset: it
        follows from `seg_class_indices` / `seg_class_groups`, else from the built-in segmenter's `num_classes`, else
        from `seg_class_names` (CXAS's 159 without any of them). A given value that disagrees raises `ValueError`.
    seg_class_names (`list[str]`): the K class names, in channel order (defaults to the segmenter's names, to CXAS's
        159 names when K == 159, else `class_0 ... class_{K-1}`). Used for tracing report sentences back to anatomy.
    seg_feature_channels (`int`): C, channels of the intermediate feature map.
    segmenter_config (`AsargSegmenterConfig`, `dict` or `None`): the built-in segmenter (a dict is read as
        `AsargSegmenterConfig(**dict)`, e.g. `default_segmenter_config()`); `None` when the segmentation inputs are
        always given precomputed (`seg_maps`, `seg_features`).
    seg_class_indices (`list[int]` or `None`): which of the built-in segmenter's output channels the projector reads,
        in this order (e.g. 20 of CXAS's 159); `None` = all of them.
    seg_class_groups (`list[list[int]]` or `None`): instead of single channels, one map per group of segmenter
        channels (e.g. `CXAS_ANATOMY_GROUPS`), reduced by `seg_group_reduction`; name the groups in `seg_class_names`
        (a list, not a dict: config.json sorts dict keys, which would scramble the channel order). Exclusive with
        `seg_class_indices`. Selection and grouping happen at the segmenter's full
        resolution, before pooling to the patch grid; precomputed `seg_maps` must already have the K selected maps.
    seg_group_reduction (`"max"` or `"mean"`): a group map is the union (max) or the mean of its members' maps.
    See `cxas_seg_config` for building these fields from CXAS class names.
    seg_map_activation (`"threshold"` or `"sigmoid"`): how the built-in segmenter's logits become maps: binary masks
        at 0.5 as CXAS ships them (`segmentation_preds`), or soft probabilities.
    freeze_segmenter (`bool`): keep the built-in segmenter frozen (no gradients, always in eval mode) — the paper's
        specialist model is a fixed, pretrained component.
    missing_seg_inputs (`"warn"` or `"error"`): what inference does when the config uses segmentation but no seg
        input reached the model (and the built-in segmenter cannot run): `"warn"` logs a warning and uses zeros, which
        makes the seg columns inert (the LLaVA-baseline behaviour); `"error"` raises. Training always raises.
    seg_map_dropout (`float`): in training only, the probability that each of a sample's K maps is removed (set to
        zero, the model's "no map"), so that any subset of maps is an input the model has seen: what counterfactual
        tracing and the Space's map switch feed it. 0 (default) turns it off.
    seg_group_dropout (`float`): in training only, the probability that each anatomical group of maps
        (`seg_dropout_groups`) is removed from a sample as a whole, and with it the segmenter features of the patches
        that group covers (at least half): the input that tracing a structure feeds the model. Needs `use_seg_maps`.
        0 (default) turns it off.
    seg_all_maps_dropout (`float`): in training only, the probability that all of a sample's maps are removed at once
        (the features stay). 0 (default) turns it off.
    seg_dropout_groups (`list[list[int]]` or `None`): the channel groups of `seg_group_dropout`; `None` = the groups of
        `CXAS_ANATOMY_GROUPS` whose members are among `seg_class_names` (resolved once, then saved).
    finding_loss_weight (`float`): training only, the weight of an auxiliary multi-label loss: a linear head on the
        mean of each image's projected tokens predicts the study's findings (`finding_labels`, e.g. the 14 CheXpert
        observations), which pushes the projector to make them readable to the language model. 0 (default): no head,
        LLaVA's parameters. Generation never uses the head.
    finding_tokens (`bool`): finding tokens (needs `finding_loss_weight > 0`, which then trains them instead of the
        linear head): a per-finding attention-pooling classifier on each image's projected tokens, and one extra image
        token per finding after them, `absent + p * (present - absent)` with p its (detached) probability, so the
        language model reads the classifier's verdicts directly (as in PromptMRG's diagnosis prompts). The processor
        then expands each image placeholder by `num_finding_labels` more tokens. False (default): LLaVA's sequence.
    finding_thresholds (`list[float]` or `None`): with `finding_tokens`, one probability per finding at which its
        token is half-way between absent and present (set by the recipe's finding alignment: the threshold of best F1
        on held-out training studies); `None` = 0.5.
    finding_token_temperature (`float`): the finding tokens' probability is `sigmoid(logit / temperature)` (logits
        relative to the thresholds); 0 = the verdict alone (each token exactly absent or present). 1 (default) in
        training; a decoding choice otherwise.
    finding_token_label_rate (`float`): training only, with `finding_tokens`: the probability that a sample's finding
        tokens are built from its `finding_labels` (the known entries) instead of the classifier's verdicts (verdict
        forcing, the teacher forcing of the tokens), so that the language model learns to write what a token asserts
        even where the classifier is still unsure. 0 (default): off.
    finding_sides (`list[str]` or `None`): with `finding_tokens`, one-sided CheXpert observations (e.g. "Pleural
        Effusion") that also get a finding per side, right then left, after the 14 observations, so the verdicts
        carry the side (`num_finding_labels` counts them: 14 + 2 per observation). `None` (default): no sides.
    finding_side_gate (`bool`): with `finding_sides` and `use_seg_maps`: each sided finding's attention pools only the
        patches of its side, by the anatomy the seg maps give (`side_class_indices`: the classes whose names say
        "right" or "left", e.g. "right lung", "posterior 4th rib left"; the patient's side, as reports name it). A
        patch's attention score gets the log of its side's coverage, so a patch outside the side gets no weight.
        False (default): free attention.
    num_finding_labels (`int`): the number of findings the head predicts (14: CheXpert's observations, plus two per
        entry of `finding_sides`).
    """

    model_type = "asarg"
    sub_configs_defaults = {
        **LlavaConfig.sub_configs_defaults,
        "segmenter_config": SubConfigSpec(config_class=AsargSegmenterConfig, optional=True),
    }

    use_seg_features: bool = False
    use_seg_maps: bool = False
    num_seg_classes: int | None = None
    seg_class_names: list[str] | None = None
    seg_feature_channels: int = 128
    segmenter_config: dict | PreTrainedConfig | None = None
    seg_class_indices: list[int] | None = None
    seg_class_groups: list[list[int]] | None = None
    seg_group_reduction: Literal["max", "mean"] = "max"
    seg_map_activation: Literal["threshold", "sigmoid"] = "threshold"
    freeze_segmenter: bool = True
    missing_seg_inputs: Literal["warn", "error"] = "warn"
    seg_map_dropout: float = 0.0
    seg_group_dropout: float = 0.0
    seg_all_maps_dropout: float = 0.0
    seg_dropout_groups: list[list[int]] | None = None
    finding_loss_weight: float = 0.0
    finding_tokens: bool = False
    finding_thresholds: list[float] | None = None
    finding_token_temperature: float = 1.0
    finding_token_label_rate: float = 0.0
    finding_sides: list[str] | None = None
    finding_side_gate: bool = False
    num_finding_labels: int = 14

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # turns a dict `segmenter_config` into an `AsargSegmenterConfig`
        if self.seg_class_indices is not None and self.seg_class_groups is not None:
            raise ValueError("Set either seg_class_indices (a subset) or seg_class_groups (merged maps), not both.")
        self.num_seg_classes = self._derive_num_seg_classes()
        if self.seg_class_names is None:
            self.seg_class_names = self._default_class_names()
        if self.seg_group_dropout and self.seg_dropout_groups is None:
            self.seg_dropout_groups = self.anatomy_groups()
        self._check_seg_fields()

    def __setattr__(self, key, value):
        if key == "segmenter_config" and isinstance(value, dict):  # settings assigned later are typed and checked too
            value = AsargSegmenterConfig(**value)
        super().__setattr__(key, value)

    @classmethod
    def from_llava_config(cls, config: PreTrainedConfig, **overrides) -> "AsargConfig":
        """An ASaRG config from a LLaVA config (or a variant of an ASaRG config), with `overrides` applied."""
        return cls(**{**llava_config_kwargs(config), **overrides})

    def _derive_num_seg_classes(self) -> int:
        """K from the class selection, else from the segmenter, else from the names; a given K must agree."""
        given, selection, seg = self.num_seg_classes, self.seg_class_selection, self.segmenter_config
        if selection is not None:
            derived = len(selection)
            hint = (
                "leave num_seg_classes unset (it follows from seg_class_indices / seg_class_groups) or make them agree"
            )
            what = f"The class selection has {derived} maps"
        elif seg is not None:
            derived = seg.num_classes
            hint = "the projector reads every segmenter map unless you choose some with seg_class_indices or "
            hint += "seg_class_groups"
            what = f"segmenter_config['num_classes']={derived}"
        elif given is not None:
            return given
        else:
            return len(CXAS_CLASS_NAMES) if self.seg_class_names is None else len(self.seg_class_names)
        if given is not None and given != derived:
            raise ValueError(f"{what} but num_seg_classes={given}; {hint}.")
        return derived

    def _default_class_names(self) -> list[str]:
        if self.seg_class_groups is not None:
            return [f"group_{i}" for i in range(len(self.seg_class_groups))]
        seg = self.segmenter_config
        source = None if seg is None else seg.class_names
        if source is None and (self.num_seg_classes if seg is None else seg.num_classes) == len(CXAS_CLASS_NAMES):
            source = list(CXAS_CLASS_NAMES)
        if self.seg_class_indices is not None and source is not None:
            return [source[i] if 0 <= i < len(source) else f"class_{i}" for i in self.seg_class_indices]
        if source is not None and len(source) == self.num_seg_classes:
            return list(source)
        return [f"class_{i}" for i in range(self.num_seg_classes)]

    @property
    def seg_class_selection(self) -> list[list[int]] | None:
        """Per projector map, the segmenter channels it is made of (`None`: channel k is segmenter channel k)."""
        if self.seg_class_groups is not None:
            return [[int(i) for i in members] for members in self.seg_class_groups]
        if self.seg_class_indices is not None:
            return [[int(i)] for i in self.seg_class_indices]
        return None

    def anatomy_groups(self) -> list[list[int]]:
        """The channels of each `CXAS_ANATOMY_GROUPS` group among this model's maps (groups with none, and repeats,
        left out)."""
        index = {name: i for i, name in enumerate(self.seg_class_names)}
        groups = [sorted(index[n] for n in members if n in index) for members in CXAS_ANATOMY_GROUPS.values()]
        groups = [group for i, group in enumerate(groups) if group and group not in groups[:i]]
        if not groups:
            raise ValueError(
                "seg_group_dropout needs groups of maps, but no CXAS anatomy group matches seg_class_names; "
                "give seg_dropout_groups (lists of channel indices)."
            )
        return groups

    def side_class_indices(self) -> tuple[list[int], list[int]]:
        """The map channels of the patient's right and of the left: the classes whose names carry the word "right" /
        "left" (`finding_side_gate` gates the sided finding tokens with them)."""
        words = [set(name.lower().replace("_", " ").split()) for name in self.seg_class_names]
        return tuple([i for i, w in enumerate(words) if side in w] for side in ("right", "left"))

    def _check_seg_fields(self) -> None:
        for name in ("seg_map_dropout", "seg_group_dropout", "seg_all_maps_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} is a probability in [0, 1), got {getattr(self, name)}.")
        if self.seg_group_dropout and not self.use_seg_maps:
            raise ValueError("seg_group_dropout removes maps: it needs use_seg_maps=True.")
        groups = self.seg_dropout_groups or []
        if any(not group or not all(0 <= int(i) < self.num_seg_classes for i in group) for group in groups):
            raise ValueError(
                f"seg_dropout_groups must be non-empty lists of channel indices below num_seg_classes="
                f"{self.num_seg_classes}, got {groups}."
            )
        if self.finding_loss_weight < 0 or self.num_finding_labels < 1:
            raise ValueError(
                f"finding_loss_weight must be >= 0 and num_finding_labels >= 1, got {self.finding_loss_weight} and "
                f"{self.num_finding_labels}."
            )
        thresholds = self.finding_thresholds
        if thresholds is not None and (
            len(thresholds) != self.num_finding_labels or not all(0 < t < 1 for t in thresholds)
        ):
            raise ValueError(
                f"finding_thresholds must be {self.num_finding_labels} probabilities in (0, 1), got {thresholds}."
            )
        if self.finding_token_temperature < 0:
            raise ValueError(f"finding_token_temperature must be >= 0, got {self.finding_token_temperature}.")
        if not 0 <= self.finding_token_label_rate <= 1:
            raise ValueError(f"finding_token_label_rate must be in [0, 1], got {self.finding_token_label_rate}.")
        if self.finding_token_label_rate and not self.finding_tokens:
            raise ValueError("finding_token_label_rate forces finding tokens: set finding_tokens=true too.")
        if self.finding_sides and not (self.finding_tokens and self.num_finding_labels > 2 * len(self.finding_sides)):
            raise ValueError(
                f"finding_sides {self.finding_sides} need finding_tokens=true and num_finding_labels counting them "
                f"(the observations plus 2 per sided one), got finding_tokens={self.finding_tokens} and "
                f"num_finding_labels={self.num_finding_labels}."
            )
        if self.finding_side_gate and not (self.finding_sides and self.use_seg_maps):
            raise ValueError(
                "finding_side_gate gates the sided finding tokens with the seg maps: it needs finding_sides and "
                f"use_seg_maps=true, got finding_sides={self.finding_sides} and use_seg_maps={self.use_seg_maps}."
            )
        if self.finding_side_gate and not all(self.side_class_indices()):
            raise ValueError(
                "finding_side_gate needs seg classes named for each side (a word 'right' or 'left' in "
                f"seg_class_names, e.g. 'right lung'); these maps have none for one side: {self.seg_class_names}."
            )
        if self.finding_tokens and not self.finding_loss_weight:
            raise ValueError(
                "finding_tokens need their classifier trained: set finding_loss_weight > 0 (the finding loss) too."
            )
        if self.num_seg_classes < 1:
            raise ValueError(f"num_seg_classes must be >= 1, got {self.num_seg_classes}.")
        if self.seg_feature_channels < 1:
            raise ValueError(f"seg_feature_channels must be >= 1, got {self.seg_feature_channels}.")
        if len(self.seg_class_names) != self.num_seg_classes:
            raise ValueError(
                f"seg_class_names has {len(self.seg_class_names)} names but num_seg_classes={self.num_seg_classes}; "
                "give one name per segmentation channel."
            )
        selection = self.seg_class_selection
        if selection is not None and any(not members for members in selection):
            raise ValueError("Every group in seg_class_groups needs at least one member class.")
        seg = self.segmenter_config
        if seg is None:
            return
        if seg.feature_channels != self.seg_feature_channels:
            raise ValueError(
                f"segmenter_config['feature_channels']={seg.feature_channels} but "
                f"seg_feature_channels={self.seg_feature_channels}; they must match."
            )
        out_of_range = sorted({i for members in selection or [] for i in members if not 0 <= i < seg.num_classes})
        if out_of_range:
            raise ValueError(
                f"seg_class_indices/seg_class_groups refer to segmenter channels {out_of_range} but the segmenter "
                f"has {seg.num_classes} classes (0..{seg.num_classes - 1})."
            )

    @property
    def seg_input_width(self) -> int:
        """Number of projector input columns added per visual token (0 for plain LLaVA)."""
        return self.seg_feature_channels * self.use_seg_features + self.num_seg_classes * self.use_seg_maps


__all__ = [
    "AsargConfig",
    "AsargSegmenterConfig",
    "CXAS_ANATOMY_GROUPS",
    "CXAS_ARCHITECTURE",
    "CXAS_CLASS_NAMES",
    "CXAS_FEATURE_LEVELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cxas_class_index",
    "cxas_seg_config",
    "cxas_segmenter_config",
    "default_segmenter_config",
    "llava_config_kwargs",
]
