"""ASaRG: LLaVA whose multi-modal projector also reads anatomy segmentation, per visual token.

For every visual token the projector's first Linear sees
    [ vision features (LLaVA) | segmenter features (C, area-pooled) | K segmentation maps (area-pooled coverage) ]
and nothing else changes. The projector keeps LLaVA's `linear_1` (vision columns) and adds the seg columns as a
separate bias-free `seg_linear` whose output is added to `linear_1`'s, which is the same map as one Linear over the
concatenation. `seg_linear` starts at zero, so a model built from a LLaVA checkpoint gives exactly that checkpoint's
logits until it is trained (`AsargForConditionalGeneration.from_llava`).

Segmentation comes either from the built-in segmenter (`seg_pixel_values`, run once per forward / once per
`generate` call, at prefill) or precomputed (`seg_maps (B,K,h,w)`, `seg_features (B,C,h',w')`, any resolution).

Hub file: imports only torch, transformers, the standard library and its sibling Hub files (`.configuration_asarg`,
`.segmenter_asarg`). Parameter names are
LLaVA's (`model.vision_tower`, `model.multi_modal_projector.linear_1/2`, `model.language_model`, `lm_head`) plus
`model.multi_modal_projector.seg_linear` when seg is on and `model.segmenter` when a built-in segmenter is configured.
"""

import dataclasses
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Cache,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
    PreTrainedConfig,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, MultimodalBaseModelOutputWithPast
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .configuration_asarg import AsargConfig
from .segmenter_asarg import (  # noqa: F401 (re-exported: the model module names its segmenters)
    SEGMENTER_ARCHITECTURES,
    AsargCxasUNetSegmenter,
    AsargUNetSegmenter,
    build_segmenter,
)

logger = logging.get_logger(__name__)

SEG_INPUT_NAMES = ("seg_pixel_values", "seg_maps", "seg_features")
# What `from_pretrained` passes on when it reads a checkpoint's config.json for its `model_type`.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")

# Written into config.json on save so that every Auto class resolves to these files with trust_remote_code.
AUTO_MAP = {
    "AutoConfig": "configuration_asarg.AsargConfig",
    "AutoModel": "modeling_asarg.AsargForConditionalGeneration",  # the owner's line must give a model that generates
    "AutoModelForImageTextToText": "modeling_asarg.AsargForConditionalGeneration",
}


# --------------------------------------------------------------------------------------------------------------------
# Projector and models
# --------------------------------------------------------------------------------------------------------------------


class AsargSegLinear(nn.Linear):
    """The projector's seg columns: a bias-free `Linear(seg_input_width, text_hidden_size)` whose output is added to
    `linear_1`'s. It is zero-initialised (`AsargPreTrainedModel._init_weights`), so seg inputs are inert until
    trained and a model grown from LLaVA gives LLaVA's logits."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)


class AsargMultiModalProjector(nn.Module):
    """LLaVA's two-layer MLP projector, with LLaVA's parameters (`linear_1`, `act`, `linear_2`), plus `seg_linear`:
    the seg columns (`None` with seg off, which leaves exactly LLaVA's projector)."""

    def __init__(self, config: AsargConfig):
        super().__init__()
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        hidden_size = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * num_feature_layers, hidden_size, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.seg_width = config.seg_input_width
        self.seg_linear = AsargSegLinear(self.seg_width, hidden_size) if self.seg_width else None

    def forward(self, image_features: torch.Tensor, seg_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Project visual tokens, with their seg columns, into the language model's embedding space.

        Args:
            image_features (`torch.Tensor` of shape `(batch_size, num_tokens, vision_width)`):
                The selected vision-tower features (vision hidden size times the number of feature layers).
            seg_tokens (`torch.Tensor` of shape `(batch_size, num_tokens, seg_input_width)`, *optional*):
                The seg columns of every token (`AsargModel.get_seg_tokens`); required when seg is on.

        Returns:
            `torch.Tensor` of shape `(batch_size, num_tokens, text_hidden_size)`.
        """
        hidden_states = self.linear_1(image_features)
        if self.seg_linear is not None:
            if seg_tokens is None or seg_tokens.shape[-1] != self.seg_width:
                got = None if seg_tokens is None else tuple(seg_tokens.shape)
                raise ValueError(f"The projector expects seg tokens of width {self.seg_width}, got {got}.")
            hidden_states = hidden_states + self.seg_linear(seg_tokens.to(hidden_states.dtype))
        return self.linear_2(self.act(hidden_states))


class AsargFindingTokens(nn.Module):
    """Finding tokens (`config.finding_tokens`): a classifier on each image's projected tokens whose verdicts the
    language model reads as `num_finding_labels` extra image tokens.

    Each finding k pools the image tokens with its own attention query (`queries[k]`) and scores the pooled vector
    (`weight[k]`, `bias[k]`); its token is `absent[k] + p_k * (present[k] - absent[k])` with `p_k` the sigmoid of that
    score, detached, so only the finding loss trains the classifier and the language model learns to read it. With
    `config.finding_thresholds`, `p_k` is taken relative to finding k's threshold (0.5 exactly at it);
    `config.finding_token_temperature` sharpens it (0: the verdict alone, absent or present)."""

    def __init__(self, config: AsargConfig):
        super().__init__()
        self.config = config
        findings, hidden = config.num_finding_labels, config.text_config.hidden_size
        self.queries = nn.Parameter(torch.empty(findings, hidden))
        self.weight = nn.Parameter(torch.empty(findings, hidden))
        self.bias = nn.Parameter(torch.empty(findings))
        self.absent = nn.Parameter(torch.empty(findings, hidden))
        self.present = nn.Parameter(torch.empty(findings, hidden))

    def attention(self, image_tokens: torch.Tensor, side_coverage: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N, H)` projected image tokens -> `(B, K, N)`: where each finding's query looks (rows sum to 1). With
        `side_coverage` `(B, 2, N)` (how much of each token's patch is the patient's right, and left, in [0, 1];
        `config.finding_side_gate`), each sided finding's scores get the log of its side's coverage."""
        scores = torch.einsum("bnh,kh->bkn", image_tokens, self.queries) * image_tokens.shape[-1] ** -0.5
        if side_coverage is not None:
            scores = scores + self.side_bias(side_coverage)
        return scores.softmax(-1)

    def side_bias(self, side_coverage: torch.Tensor) -> torch.Tensor:
        """`(B, 2, N)` right and left coverage -> `(B, K, N)` attention bias: 0 for the observations, the log of the
        side's coverage (floored at 1e-4) for each sided finding (right then left, as `finding_names` orders them)."""
        sided = len(self.config.finding_sides or ())
        batch, _, n = side_coverage.shape
        log_cover = side_coverage.clamp_min(1e-4).log()
        plain = log_cover.new_zeros(batch, self.config.num_finding_labels - 2 * sided, n)
        return torch.cat([plain, log_cover.repeat(1, sided, 1)], 1)

    def logits(self, image_tokens: torch.Tensor, side_coverage: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N, H)` projected image tokens (and their side coverage, see `attention`) -> `(B, K)` finding logits."""
        pooled = torch.einsum("bkn,bnh->bkh", self.attention(image_tokens, side_coverage), image_tokens)
        return (pooled * self.weight).sum(-1) + self.bias

    def relative(self, logits: torch.Tensor) -> torch.Tensor:
        """`(..., K)` finding logits relative to the findings' thresholds (`config.finding_thresholds`): 0 at each."""
        if self.config.finding_thresholds is None:
            return logits
        return logits - torch.tensor(self.config.finding_thresholds, device=logits.device).logit()

    def presence(self, logits: torch.Tensor) -> torch.Tensor:
        """`(B, K)` finding logits -> `(B, K)` how present each token says its finding is, in [0, 1]: the sigmoid of the
        logit relative to the finding's threshold, sharpened by `config.finding_token_temperature`."""
        logits = self.relative(logits)
        temperature = self.config.finding_token_temperature
        return (logits >= 0).to(logits.dtype) if temperature == 0 else (logits / temperature).sigmoid()

    def embed(self, presence: torch.Tensor) -> torch.Tensor:
        """`(B, K)` presence in [0, 1] -> `(B, K, H)` finding tokens."""
        presence = presence[..., None].to(self.present.dtype)
        return self.absent + presence * (self.present - self.absent)

    def forward(self, image_tokens: torch.Tensor, side_coverage: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N, H)` projected image tokens -> `(B, K, H)` finding tokens."""
        return self.embed(self.presence(self.logits(image_tokens, side_coverage).detach()))


@dataclasses.dataclass
class AsargImageOutput(BaseModelOutputWithPooling):
    r"""
    The vision tower's output with the projected image tokens as `pooler_output` (LLaVA's), and with
    `config.finding_tokens` the finding classifier's logits.

    finding_logits (`torch.FloatTensor` of shape `(batch_size, num_finding_labels)`, *optional*):
        The logits from which the finding tokens were built, with their gradients: what the finding loss trains and
        verdict forcing replaces.
    """

    finding_logits: torch.FloatTensor | None = None


def finding_bce(logits: torch.Tensor, finding_labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of finding `logits` (B, K) against `finding_labels` (1 present, 0 absent, below 0 unknown:
    ignored), averaged over the known entries."""
    target = finding_labels.to(logits.dtype)
    known = (target >= 0).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0), weight=known, reduction="sum")
    return loss / known.sum().clamp(min=1)


def _checkpoint_model_type(pretrained_model_name_or_path, kwargs: dict) -> str | None:
    """`model_type` in a checkpoint's config.json; None when there is none to read (e.g. a weights-only folder)."""
    if pretrained_model_name_or_path is None:
        return None
    hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
    except (OSError, ValueError):
        return None
    return config_dict.get("model_type")


class AsargPreTrainedModel(LlavaPreTrainedModel):
    config: AsargConfig
    config_class = AsargConfig

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AsargSegLinear):
            init.zeros_(module.weight)  # like every `init` function, it leaves weights loaded from a checkpoint alone
        elif isinstance(module, AsargFindingTokens):
            # unit-variance scores from the start (the recipe then sets the bias to the training prevalences); the
            # two token tables like the language model's embeddings
            for weight in (module.queries, module.weight):
                init.normal_(weight, std=weight.shape[-1] ** -0.5)
            init.zeros_(module.bias)
            for table in (module.absent, module.present):
                init.normal_(table, std=self.config.text_config.initializer_range)

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: every weight is initialised through `transformers.initialization`, as in library models, so ASaRG
        needs none of transformers' fallbacks for custom code. (For custom code `initialize_weights` skips modules
        without parameters of their own, such as CLIP's attention blocks, whose `_init_weights` sets their children's
        std: weights missing from a checkpoint would get the generic std, not the one they get on construction.)"""
        return False

    def save_pretrained(self, *args, **kwargs):
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, which also takes a LLaVA checkpoint (config `model_type` "llava", weights
        in LLaVA's key layout). That one is built with `AsargForConditionalGeneration.from_llava`, so that every
        weight finds its place and the model saves under ASaRG's own names: ASaRG config fields in `kwargs` (or those
        of a `config`) choose the seg setup, the other kwargs go to `LlavaForConditionalGeneration.from_pretrained`."""
        if _checkpoint_model_type(pretrained_model_name_or_path, kwargs) == "llava":
            return cls._from_llava_checkpoint(pretrained_model_name_or_path, *model_args, **kwargs)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # Loading puts new parameters in place, which require gradients again: a frozen specialist stays frozen.
        base = model if isinstance(model, AsargModel) else getattr(model, "model", None)
        if isinstance(base, AsargModel) and base.segmenter is not None and model.config.freeze_segmenter:
            base.segmenter.requires_grad_(False)
        return loaded

    @classmethod
    def _from_llava_checkpoint(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        from_llava = getattr(cls, "from_llava", None)
        if from_llava is None or model_args:
            raise ValueError(
                f"{pretrained_model_name_or_path} is a LLaVA checkpoint (model_type 'llava'): build ASaRG from it with "
                f"AsargForConditionalGeneration.from_llava({str(pretrained_model_name_or_path)!r}, ...)."
            )
        config = kwargs.pop("config", None)
        overrides = {name: getattr(config, name) for name in ASARG_CONFIG_FIELDS} if config is not None else {}
        overrides.update({name: kwargs.pop(name) for name in ASARG_CONFIG_FIELDS if name in kwargs})
        output_loading_info = kwargs.pop("output_loading_info", False)
        llava, loading_info = LlavaForConditionalGeneration.from_pretrained(
            pretrained_model_name_or_path, output_loading_info=True, **kwargs
        )
        model = from_llava(llava, **overrides)
        return (model, loading_info) if output_loading_info else model


_SEGMENTER_OUTPUT = "the built-in segmenter's {} (computed from `seg_pixel_values`)"


def _seg_value_problem(seg_tokens, seg_maps, given: tuple[bool, bool], config) -> str | None:
    """What is wrong with the seg values, None if nothing is (the error path only: it may cost more reductions and
    syncs). `given`: were the maps and the features given precomputed (else the built-in segmenter made them)."""
    maps_source = "`seg_maps`" if given[0] else _SEGMENTER_OUTPUT.format("maps")
    features_source = "`seg_features`" if given[1] else _SEGMENTER_OUTPUT.format("features")
    if seg_maps is not None and not torch.isfinite(seg_maps.float()).all():
        return f"{maps_source} contain NaN or infinite values.{_nan_hint(maps_source)}"
    if seg_maps is not None:
        low, high = (float(v) for v in torch.aminmax(seg_maps.float()))
        if low < 0 or high > 1:
            return (
                f"{maps_source} have values in [{low:g}, {high:g}], outside [0, 1]: seg maps are per-class "
                "coverage fractions / probabilities (binary 0/1 or bool masks, or probabilities). Divide 0-255 "
                "masks by 255; apply a sigmoid to logits."
            )
    width = config.seg_feature_channels if config.use_seg_features else 0
    if width and not torch.isfinite(seg_tokens[..., :width]).all():
        return f"{features_source} contain NaN or infinite values.{_nan_hint(features_source)}"
    if not torch.isfinite(seg_tokens).all():
        return "The segmentation columns contain NaN or infinite values."
    return None  # every value is fine: only their sum overflowed


def _nan_hint(source: str) -> str:
    if "seg_pixel_values" in source:
        return " Check `seg_pixel_values` (and the segmenter's weights) for NaN or infinite values."
    return " Seg inputs must be finite; check how they were computed or stored."


def _pool_to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B,C,h,w) at any resolution -> (B, gh*gw, C) float32, by area averaging (coverage fraction for binary maps).

    Sizes that are whole multiples of the grid (the cache's grid-sized entries included) sum equal blocks in two
    reductions, the first over the whole input, the second on an input a block side smaller, in float32 without a
    float32 copy of the input, and divide once. On CPU that is 2-7x faster than adaptive pooling, whose per-window
    loop does not vectorise; the values agree to float rounding. The first pass sums along the rows' blocks (an inner
    reduction) when they are at least 16 wide, else down the columns (vectorised across the row): the faster of the
    two for each, as measured on CPU. Other sizes take adaptive pooling's windows.
    """
    (batch, channels, height, width), (grid_h, grid_w) = x.shape, grid
    if height % grid_h or width % grid_w:
        pooled = F.adaptive_avg_pool2d(x.float(), grid)
    elif (height, width) == grid:
        pooled = x.float()
    else:
        block_h, block_w = height // grid_h, width // grid_w
        if block_w >= 16:
            columns = x.reshape(batch, channels, height, grid_w, block_w).sum(-1, dtype=torch.float32)
            pooled = columns.view(batch, channels, grid_h, block_h, grid_w).sum(3)
        else:
            rows = x.reshape(batch, channels, grid_h, block_h, width).sum(3, dtype=torch.float32)
            pooled = rows.view(batch, channels, grid_h, grid_w, block_w).sum(-1)
        pooled = pooled.div_(block_h * block_w)
    return pooled.flatten(2).transpose(1, 2)


class AsargModel(AsargPreTrainedModel, LlavaModel):
    """LLaVA's base model whose projector also reads segmentation, per visual token.

    All seg handling lives here, not in `AsargForConditionalGeneration`: TRL's loss path calls this model directly.
    """

    def __init__(self, config: AsargConfig):
        super().__init__(config)
        self.multi_modal_projector = AsargMultiModalProjector(config)
        self.segmenter = build_segmenter(config.segmenter_config) if config.segmenter_config else None
        if self.segmenter is not None and config.freeze_segmenter:
            self.segmenter.requires_grad_(False)
        self.finding_tokens = AsargFindingTokens(config) if config.finding_tokens else None
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
        """Type, dtype and shape of a seg input (no values: those are checked once, in `_check_seg_values`)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"`{name}` must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor (the "
                "processor gives tensors with return_tensors='pt')."
            )
        if x.is_complex() or x.is_quantized:
            raise ValueError(f"`{name}` has dtype {x.dtype}; give a real (float, integer or bool) tensor.")
        if x.dim() != 4 or x.shape[0] != batch or x.shape[1] != channels:
            raise ValueError(
                f"`{name}` must have shape (batch={batch}, {channels}, height, width); got {tuple(x.shape)}."
            )
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"`{name}` has an empty height or width: {tuple(x.shape)}.")

    def _check_seg_pixel_values(self, seg_pixel_values: torch.Tensor, batch: int) -> None:
        if not isinstance(seg_pixel_values, torch.Tensor):
            raise ValueError(
                f"`seg_pixel_values` must be a torch.Tensor, got {type(seg_pixel_values).__name__}; use the "
                "processor with return_tensors='pt'."
            )
        if seg_pixel_values.dim() != 4 or seg_pixel_values.shape[0] != batch:
            raise ValueError(
                f"`seg_pixel_values` must have shape (batch={batch}, channels, height, width) like pixel_values; got "
                f"{tuple(seg_pixel_values.shape)}."
            )

    def _check_seg_values(self, seg_tokens: torch.Tensor, seg_maps: torch.Tensor | None, given: tuple) -> None:
        """Non-finite seg columns, or given maps outside [0, 1], raise ValueError naming the input.

        A sum of the pooled columns and a single device sync per forward; `generate` encodes the images once, at
        prefill, so decode steps pay nothing. NaN and inf propagate through pooling and through the sum (a sum that
        overflows with finite values is told apart on the error path, which looks at every value). Maps given
        precomputed (`given[0]`) are also checked before pooling, for their range: an average could hide values
        outside [0, 1], and NaN propagates through min and max (one pass over the maps, as LLaVA checks its inputs once
        per call, with no cache). The built-in segmenter's maps need no range check: thresholded or through a sigmoid,
        they lie in [0, 1] unless NaN. (Few, common operators on purpose: in a small model's forward each further
        operator costs several microseconds of dispatch.)
        """
        # Skipped while torch.compile traces (a data-dependent branch would break the graph), as LLaVA's own checks.
        if torch.compiler.is_compiling():
            return
        total = seg_tokens.sum()
        check_range = given[0] and seg_maps is not None and seg_maps.dtype != torch.bool
        if check_range:  # the one sync (stack promotes integer map bounds)
            total, low, high = torch.stack([total, *torch.aminmax(seg_maps)]).tolist()
            in_range = low >= 0 and high <= 1
        else:
            total, in_range = total.item(), True
        if not (math.isfinite(total) and in_range):
            problem = _seg_value_problem(seg_tokens, seg_maps, given, self.config)
            if problem is not None:
                raise ValueError(problem)

    def get_seg_tokens(
        self,
        pixel_values: torch.Tensor,
        seg_pixel_values: torch.Tensor | None = None,
        seg_maps: torch.Tensor | None = None,
        seg_features: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Per-visual-token seg columns `(B, gh*gw, C+K)` on the vision patch grid, or None when seg is off."""
        config = self.config
        # Each config read costs about a microsecond (PreTrainedConfig's __getattribute__): read each one once.
        use_features, use_maps = config.use_seg_features, config.use_seg_maps
        if not (use_features or use_maps):
            if any(x is not None for x in (seg_pixel_values, seg_maps, seg_features)):
                logger.warning_once("Segmentation inputs were given to a model with seg off (plain LLaVA): ignored.")
            return None
        batch, patch = pixel_values.shape[0], config.vision_config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        need_maps = use_maps and seg_maps is None
        need_features = use_features and seg_features is None
        given = (seg_maps is not None, seg_features is not None)  # else from the segmenter: named in a bad-value error
        if (need_maps or need_features) and seg_pixel_values is not None:
            self._check_seg_pixel_values(seg_pixel_values, batch)
            seg = self.run_segmenter(seg_pixel_values)
            seg_maps = seg["maps"] if seg_maps is None else seg_maps
            seg_features = seg["features"] if seg_features is None else seg_features
        elif need_maps or need_features:
            self._missing_seg_inputs("segmentation maps" if need_maps else "segmentation features")
            return pixel_values.new_zeros(batch, grid[0] * grid[1], config.seg_input_width)

        features = maps = None
        if use_features:
            self._check_seg_tensor("seg_features", seg_features, config.seg_feature_channels, batch)
            features = _pool_to_grid(seg_features, grid)
        if use_maps:
            self._check_seg_tensor("seg_maps", seg_maps, config.num_seg_classes, batch)
            maps = _pool_to_grid(seg_maps, grid)
            if self.training:
                features, maps = self._seg_dropout(features, maps)
        columns = [column for column in (features, maps) if column is not None]
        seg_tokens = torch.cat(columns, dim=-1) if len(columns) > 1 else columns[0]
        self._check_seg_values(seg_tokens, seg_maps if use_maps else None, given)
        return seg_tokens

    def _seg_dropout(
        self, features: torch.Tensor | None, maps: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Training-time removal of maps (set to zero, the model's "no map"), so that what tracing feeds the model is
        an input it has seen: single maps (`seg_map_dropout`), whole anatomical groups with the features of the
        patches they cover (`seg_group_dropout`), or every map at once (`seg_all_maps_dropout`). Done on the pooled
        `(B, N, K)` maps, which is the same as before pooling (pooling is linear) and cheaper."""
        config = self.config
        p_map, p_group, p_all = config.seg_map_dropout, config.seg_group_dropout, config.seg_all_maps_dropout
        if not (p_map or p_group or p_all):
            return features, maps
        batch, _, k = maps.shape
        drop = torch.zeros(batch, 1, k, dtype=torch.bool, device=maps.device)
        if p_map:
            drop |= torch.rand(batch, 1, k, device=maps.device) < p_map
        if p_group:
            if config.seg_dropout_groups is None:
                raise ValueError(
                    "seg_group_dropout is set but seg_dropout_groups is not: set both together, e.g. "
                    "config.seg_dropout_groups = config.anatomy_groups()."
                )
            members = torch.zeros(len(config.seg_dropout_groups), k, device=maps.device)
            for g, group in enumerate(config.seg_dropout_groups):
                members[g, group] = 1.0
            dropped = (torch.rand(batch, members.shape[0], device=maps.device) < p_group).float()
            group_drop = (dropped @ members > 0)[:, None, :]  # (B, 1, K)
            drop |= group_drop
            if features is not None:  # a patch at least half covered by a removed group loses its features too
                covered = (maps * group_drop).amax(dim=-1, keepdim=True) >= 0.5
                features = features.masked_fill(covered, 0.0)
        if p_all:
            drop |= torch.rand(batch, 1, 1, device=maps.device) < p_all
        return features, maps.masked_fill(drop, 0.0)

    # ---- vision + seg -> projected image tokens ---------------------------------------------------------------------

    def _select_vision_features(self, hidden_states, layer, strategy) -> torch.Tensor:
        layers = [layer] if isinstance(layer, int) else list(layer)
        selected = [hidden_states[i][:, 1:] if strategy == "default" else hidden_states[i] for i in layers]
        return selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)  # cat would copy a single layer

    def get_vision_features(
        self,
        pixel_values: torch.FloatTensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
    ) -> torch.Tensor:
        """The projector's vision input `(B, N, D)`: the vision tower's feature layer(s), with or without the CLS
        token as the strategy says (the config's by default). Public seam for tools that re-project one image's
        vision tokens with different seg columns (tracing); `get_image_features` is this plus the projection."""
        return self._vision_tokens(pixel_values, vision_feature_layer, vision_feature_select_strategy)[1]

    def _vision_tokens(self, pixel_values, layer=None, strategy=None, **kwargs):
        layer = self.config.vision_feature_layer if layer is None else layer
        strategy = strategy or self.config.vision_feature_select_strategy
        # Only the feature layer(s) are captured, as in LLaVA's own `get_image_features` (the others come back as
        # None): every layer would stay referenced from the output. A caller that asks for hidden states gets them all;
        # so does layer 0, which transformers would read as "no hidden states".
        hidden_states = True if kwargs.pop("output_hidden_states", None) or layer == 0 else layer
        image_outputs = self.vision_tower(pixel_values, output_hidden_states=hidden_states, return_dict=True, **kwargs)
        return image_outputs, self._select_vision_features(image_outputs.hidden_states, layer, strategy)

    def project_image_tokens(self, vision_features: torch.Tensor, seg_tokens: torch.Tensor | None) -> torch.Tensor:
        """The projected image tokens `(B, N, H)` of vision tokens `(B, N, D)` and their seg columns on the patch grid
        (`get_seg_tokens`, `(B, gh*gw, C+K)`, or None when seg is off). A CLS token (strategy "full") has no location:
        it gets zero seg columns. Public seam, with `get_vision_features` and `get_seg_tokens`, for counterfactuals
        that change one image's seg columns without running the vision tower again. With `config.finding_tokens` the
        K finding tokens follow the N image tokens: `(B, N + K, H)`."""
        return self._project(vision_features, seg_tokens)[0]

    def _project(self, vision_features, seg_tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`project_image_tokens`, and the finding logits its finding tokens were built from (None without them)."""
        seg_tokens = self._seg_per_token(seg_tokens, vision_features.shape[1])
        projected = self.multi_modal_projector(vision_features, seg_tokens)
        if self.finding_tokens is None:
            return projected, None
        head = self.finding_tokens
        logits = head.logits(projected, self.side_coverage(seg_tokens))
        return torch.cat([projected, head.embed(head.presence(logits.detach()))], 1), logits

    @staticmethod
    def _seg_per_token(seg_tokens: torch.Tensor | None, num_tokens: int) -> torch.Tensor | None:
        """Seg columns on the patch grid -> one row per vision token (a CLS token's: zeros)."""
        if seg_tokens is not None and seg_tokens.shape[1] == num_tokens - 1:
            seg_tokens = torch.cat([seg_tokens.new_zeros(seg_tokens.shape[0], 1, seg_tokens.shape[2]), seg_tokens], 1)
        if seg_tokens is not None and seg_tokens.shape[1] != num_tokens:
            raise ValueError(
                f"The vision tower gave {num_tokens} tokens per image but the patch grid has "
                f"{seg_tokens.shape[1]}; ASaRG needs a square-patch vision tower whose tokens form that grid."
            )
        return seg_tokens

    def side_coverage(self, seg_tokens: torch.Tensor | None) -> torch.Tensor | None:
        """`(B, 2, N)`: how much of each token's patch is the patient's right, and left (the largest coverage among
        the maps of that side, `config.side_class_indices`), from its seg columns; None unless
        `config.finding_side_gate`. A token whose maps are all removed (or a CLS token) covers neither side."""
        if not self.config.finding_side_gate:
            return None
        if seg_tokens is None:
            raise ValueError(
                "This model's sided finding tokens are gated by anatomy (config.finding_side_gate): give the seg "
                "columns the image tokens were projected with (`get_seg_tokens`)."
            )
        maps = seg_tokens[..., -self.config.num_seg_classes :]
        return torch.stack([maps[..., side].amax(-1) for side in self.config.side_class_indices()], 1)

    def finding_logits(self, image_tokens: torch.Tensor, seg_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, K)` logits of the finding-token classifier (`config.finding_tokens`) for `(B, N + K, H)` image tokens as
        `project_image_tokens` returns them (the last K are the finding tokens themselves), and the seg columns they
        were projected with (needed with `config.finding_side_gate`)."""
        tokens, coverage = self._finding_inputs(image_tokens, seg_tokens)
        return self.finding_tokens.logits(tokens, coverage)

    def finding_attention(self, image_tokens: torch.Tensor, seg_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, K, N)`: where each finding's classifier looks over the N image tokens (arguments as in
        `finding_logits`); each row sums to 1."""
        tokens, coverage = self._finding_inputs(image_tokens, seg_tokens)
        return self.finding_tokens.attention(tokens, coverage)

    def _finding_inputs(self, image_tokens, seg_tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.finding_tokens is None:
            raise ValueError("This model has no finding tokens (config.finding_tokens is False).")
        tokens = image_tokens[:, : -self.config.num_finding_labels]
        return tokens, self.side_coverage(self._seg_per_token(seg_tokens, tokens.shape[1]))

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features):
        """LLaVA's, with a message that counts image tokens against image features (LLaVA's counts feature elements)
        and says how to build a prompt with the right number of image tokens."""
        try:
            return super().get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
        except ValueError as error:
            # LLaVA's own text first, so code that matches LLaVA's message still does; then what to do.
            raise ValueError(
                f"{error} {self._image_token_mismatch(input_ids, inputs_embeds, image_features)}"
            ) from error

    def _image_token_mismatch(self, input_ids, inputs_embeds, image_features) -> str:
        token_id = self.config.image_token_id
        if input_ids is not None:
            tokens = int((input_ids == token_id).sum())
        else:
            image_embedding = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            tokens = int((inputs_embeds == image_embedding).all(-1).sum())
        vision = self.config.vision_config
        per_image = (vision.image_size // vision.patch_size) ** 2
        per_image += self.config.vision_feature_select_strategy == "full"  # CLS kept
        per_image += self.config.num_finding_labels if self.config.finding_tokens else 0
        features = image_features.shape[0]
        count = str(features)
        if features % per_image == 0:
            count = f"{features // per_image} image(s) x {per_image} tokens per image = {features}"
        return (
            f"The text has {tokens} image tokens (id {token_id}) but pixel_values give {count} image features; each "
            f"image needs exactly {per_image} image tokens in the text, in order. Build the inputs with the "
            "processor, `processor(images=..., text=prompt)`, where the prompt holds one image placeholder per image "
            '(e.g. from `processor.apply_chat_template` with a {"type": "image"} part): it expands each placeholder to '
            "the image tokens. Without images, do not pass pixel_values."
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        seg_pixel_values: torch.FloatTensor | None = None,
        seg_maps: torch.FloatTensor | None = None,
        seg_features: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPooling:
        r"""LLaVA's image features, with each token's seg columns joined before the projector.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Images for the vision tower.
            seg_pixel_values, seg_maps, seg_features:
                The segmentation inputs, as in `AsargModel.forward`.
            vision_feature_layer (`int` or `list[int]`, *optional*):
                Vision layer(s) to project, as in LLaVA; defaults to the config's.
            vision_feature_select_strategy (`str`, *optional*):
                `"default"` (drop the CLS token) or `"full"`, as in LLaVA; defaults to the config's.
            kwargs:
                Go to the vision tower (e.g. `output_attentions=True`); `return_dict=False` returns a tuple.

        The seg arguments must stay in this signature: `generate` pre-encodes images once, before prefill, by calling
        this method with the model kwargs that its signature names.

        Returns:
            An `AsargImageOutput`: the vision tower's output, whose `pooler_output` is a list with one
            `(num_tokens, text_hidden_size)` tensor of projected features per image, and the finding logits.
        """
        image_outputs, vision_features = self._vision_tokens(
            pixel_values, vision_feature_layer, vision_feature_select_strategy, **kwargs
        )
        seg_inputs = {"seg_pixel_values": seg_pixel_values, "seg_maps": seg_maps, "seg_features": seg_features}
        seg_tokens = self.get_seg_tokens(pixel_values, **seg_inputs)
        tokens, finding_logits = self._project(vision_features, seg_tokens)
        image_outputs.pooler_output = list(tokens)
        return AsargImageOutput(**image_outputs, finding_logits=finding_logits)

    def _encode_images(
        self, pixel_values, mm_encoder_outputs, **image_kwargs
    ) -> dict[str, BaseModelOutputWithPooling]:
        """`mm_encoder_outputs` with the images encoded by `get_image_features` (`image_kwargs` go to it)."""
        mm_encoder_outputs = dict(mm_encoder_outputs or {})  # generate passes {} when it did not pre-encode
        if pixel_values is not None:
            if mm_encoder_outputs.get("image") is not None:
                raise ValueError(
                    "You cannot specify both pixel_values and mm_encoder_outputs['image'] at the same time."
                )
            # return_dict=True as LLaVA's forward passes it: with `config.return_dict=False` a tuple would come back.
            mm_encoder_outputs["image"] = self.get_image_features(pixel_values, return_dict=True, **image_kwargs)
        return mm_encoder_outputs

    def _force_verdicts(self, image_outputs, finding_labels: torch.Tensor):
        """Verdict forcing (`config.finding_token_label_rate`): with that probability per sample, the finding tokens the
        language model reads are built from the sample's known `finding_labels` (1 present, 0 absent; unknown entries
        keep the classifier's verdict) instead of the classifier's verdicts. Returns a copy of `image_outputs`."""
        head, count = self.finding_tokens, self.config.num_finding_labels
        tokens = torch.stack(list(image_outputs.pooler_output))
        presence = head.presence(self._image_finding_logits(image_outputs).detach())
        labels = finding_labels.to(presence.device)
        forced = torch.rand(labels.shape[0], 1, device=labels.device) < self.config.finding_token_label_rate
        presence = torch.where(forced & (labels >= 0), labels.to(presence.dtype), presence)
        image_outputs = type(image_outputs)(**image_outputs)
        image_outputs.pooler_output = list(torch.cat([tokens[:, :-count], head.embed(presence)], 1))
        return image_outputs

    def _image_finding_logits(self, image_outputs) -> torch.Tensor:
        """The finding logits `get_image_features` gave with `image_outputs`; recomputed from the image tokens for
        outputs built elsewhere (e.g. a caller's own `mm_encoder_outputs`)."""
        logits = getattr(image_outputs, "finding_logits", None)
        return self.finding_logits(torch.stack(list(image_outputs.pooler_output))) if logits is None else logits

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        seg_pixel_values: torch.FloatTensor | None = None,
        seg_maps: torch.FloatTensor | None = None,
        seg_features: torch.FloatTensor | None = None,
        finding_labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | MultimodalBaseModelOutputWithPast:
        r"""LLaVA's forward, with the images encoded together with their segmentation (`get_image_features`).

        Args:
            seg_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, seg_image_size, seg_image_size)`, *optional*):
                Images for the built-in segmenter (from `AsargProcessor`); it runs for the maps or features not given.
            seg_maps (`torch.FloatTensor` of shape `(batch_size, num_seg_classes, height, width)`, *optional*):
                Precomputed segmentation maps: per-class coverage in [0, 1] (float, or bool / integer 0-1 masks), at
                any resolution (area-pooled to the vision patch grid). Values outside [0, 1], NaN or inf raise.
            seg_features (`torch.FloatTensor` of shape `(batch_size, seg_feature_channels, height, width)`, *optional*):
                Precomputed segmenter features, any resolution (area-pooled to the patch grid); NaN or inf raise.
            finding_labels (`torch.Tensor` of shape `(batch_size, num_finding_labels)`, *optional*):
                Training only, with finding tokens and `config.finding_token_label_rate > 0`: the study's findings,
                with which the finding tokens are forced (`_force_verdicts`). Ignored otherwise.
        The other arguments are `LlavaModel.forward`'s; `kwargs` (e.g. `output_attentions`) reach the vision tower too.
        """
        mm_encoder_outputs = self._encode_images(
            pixel_values,
            mm_encoder_outputs,
            seg_pixel_values=seg_pixel_values,
            seg_maps=seg_maps,
            seg_features=seg_features,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        forcing = self.training and self.config.finding_token_label_rate > 0 and self.finding_tokens is not None
        if finding_labels is not None and forcing and mm_encoder_outputs.get("image") is not None:
            mm_encoder_outputs["image"] = self._force_verdicts(mm_encoder_outputs["image"], finding_labels)
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
    """ASaRG for report generation: LLaVA's `forward`, `get_image_features` and `generate` on top of `AsargModel`.

    The seg inputs (`seg_pixel_values`, `seg_maps`, `seg_features`, see `AsargModel.forward`) travel through the
    parent's `**kwargs` to `AsargModel`. They are not in `forward`'s signature, so a `transformers.Trainer` keeps them
    only with `remove_unused_columns=False` (without them a training step raises, naming that setting).
    """

    def __init__(self, config: AsargConfig):
        # LLaVA's __init__ builds a LlavaModel that is replaced right away (free under from_pretrained: both are built
        # on the meta device). That model's post_init consumes `config.gradient_checkpointing`: hand it on.
        gradient_checkpointing = getattr(config, "gradient_checkpointing", False)
        super().__init__(config)
        if gradient_checkpointing:
            config.gradient_checkpointing = True
        self.model = AsargModel(config)
        # Off by default (no head: LLaVA's parameters): the auxiliary multi-label loss on the projected image tokens.
        # With finding tokens the finding loss trains their classifier (`AsargModel.finding_tokens`) instead.
        hidden = config.text_config.hidden_size
        linear_head = config.finding_loss_weight > 0 and not config.finding_tokens
        self.finding_head = nn.Linear(hidden, config.num_finding_labels) if linear_head else None
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        seg_pixel_values: torch.FloatTensor | None = None,
        seg_maps: torch.FloatTensor | None = None,
        seg_features: torch.FloatTensor | None = None,
        finding_labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LlavaCausalLMOutputWithPast:
        r"""LLaVA's forward with the seg inputs of `AsargModel.forward` named, so that a `transformers.Trainer` (whose
        default `remove_unused_columns=True` keeps only the columns `forward` names) keeps them.

        Args:
            seg_pixel_values, seg_maps, seg_features:
                The segmentation inputs, as in `AsargModel.forward`.
            finding_labels (`torch.Tensor` of shape `(batch_size, num_finding_labels)`, *optional*):
                Training only, with `config.finding_loss_weight > 0`: the study's findings (1 present, 0 absent, -1
                unknown and ignored). A linear head on the mean of each image's projected tokens predicts them; the
                output gets `finding_logits` and `finding_loss` (binary cross-entropy), and `loss` (when `labels` are
                given) includes `finding_loss_weight * finding_loss`. With finding tokens and
                `config.finding_token_label_rate > 0` they also reach the backbone, which forces the tokens with
                them in training (`AsargModel._force_verdicts`).
        The other arguments are `LlavaForConditionalGeneration.forward`'s.
        """
        seg_inputs = dict(zip(SEG_INPUT_NAMES, (seg_pixel_values, seg_maps, seg_features)))
        if finding_labels is not None and self.config.finding_token_label_rate > 0:
            kwargs["finding_labels"] = finding_labels  # the backbone forces the finding tokens with them
        outputs = super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            labels=labels,
            logits_to_keep=logits_to_keep,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **{name: value for name, value in seg_inputs.items() if value is not None},
            **kwargs,
        )
        if finding_labels is not None:
            logits, loss = self.finding_loss(outputs.image_outputs, finding_labels)
            outputs["finding_logits"], outputs["finding_loss"] = logits, loss
            if outputs.get("loss") is not None:
                outputs["loss"] = outputs["loss"] + self.config.finding_loss_weight * loss
        return outputs

    def finding_loss(self, image_outputs, finding_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, binary cross-entropy) of the finding head on each image's mean projected token, or of the
        finding-token classifier (`config.finding_tokens`); entries of `finding_labels` below 0 are ignored."""
        if self.finding_head is None and self.model.finding_tokens is None:
            raise ValueError(
                "finding_labels were given, but this model has no finding head: set config.finding_loss_weight > 0 "
                "(the auxiliary multi-label loss) before building the model, or drop the finding_labels column."
            )
        if image_outputs is None:
            raise ValueError("finding_labels need images: pass pixel_values with them.")
        tokens = torch.stack(list(image_outputs.pooler_output))
        if tokens.shape[0] != finding_labels.shape[0] or finding_labels.shape[-1] != self.config.num_finding_labels:
            raise ValueError(
                f"finding_labels has shape {tuple(finding_labels.shape)} but the batch has {tokens.shape[0]} images and "
                f"the head {self.config.num_finding_labels} labels: give one row per image (one image per sample)."
            )
        if self.finding_head is None:
            logits = self.model._image_finding_logits(image_outputs)
        else:
            logits = self.finding_head(tokens.mean(1))
        return logits, finding_bce(logits, finding_labels)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        seg_pixel_values: torch.FloatTensor | None = None,
        seg_maps: torch.FloatTensor | None = None,
        seg_features: torch.FloatTensor | None = None,
        **kwargs,
    ) -> dict:
        """LLaVA's, plus the seg inputs for the prefill step only (decode steps have no image tokens).

        Naming them here makes `generate` accept them. It normally consumes them itself, when it pre-encodes the images
        through `AsargModel.get_image_features`, so the segmenter runs once per `generate` call.
        """
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            seg_inputs = dict(zip(SEG_INPUT_NAMES, (seg_pixel_values, seg_maps, seg_features)))
            model_inputs.update({name: value for name, value in seg_inputs.items() if value is not None})
        return model_inputs

    # ---- growing ASaRG out of a LLaVA checkpoint ---------------------------------------------------------------------

    @classmethod
    def from_llava(cls, source, llava_kwargs: dict | None = None, **config_overrides):
        """Build ASaRG from a LLaVA model or checkpoint (path or Hub id; legacy key names included).

        `config_overrides` are ASaRG config fields, e.g. `use_seg_maps=True, seg_feature_channels=128,
        segmenter_config=None`. Every LLaVA weight is reused by name; the seg columns (`seg_linear`) start at zero, so
        the result has the LLaVA model's logits until it is trained. A built-in segmenter (if configured) starts from
        random weights. `llava_kwargs` go to `LlavaForConditionalGeneration.from_pretrained` (e.g. `dtype`). Any LLaVA
        weight that does not find its place raises.
        """
        if isinstance(source, LlavaForConditionalGeneration):
            llava = source
        else:
            llava = LlavaForConditionalGeneration.from_pretrained(source, **(llava_kwargs or {}))
        config = AsargConfig.from_llava_config(llava.config, **config_overrides)
        with torch.device("meta"):
            model = cls(config)
        like = llava.get_input_embeddings().weight
        state = {**llava.state_dict(), **_new_asarg_weights(model, like)}
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as error:
            raise ValueError(f"LLaVA weights do not map onto ASaRG: {error}") from error
        _take_non_persistent_buffers(model, llava)
        model.tie_weights()
        still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if still_meta:
            raise RuntimeError(f"from_llava left tensors unset: {still_meta[:5]}")
        model.generation_config = llava.generation_config
        return model


def _new_asarg_weights(model: AsargForConditionalGeneration, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weights ASaRG adds to LLaVA: zero seg columns and a freshly built (randomly initialised) segmenter."""
    weights = {}
    seg_linear = model.model.multi_modal_projector.seg_linear
    if seg_linear is not None:
        weights["model.multi_modal_projector.seg_linear.weight"] = like.new_zeros(seg_linear.weight.shape)
    if model.config.segmenter_config is not None:
        segmenter = build_segmenter(model.config.segmenter_config).to(device=like.device, dtype=like.dtype)
        weights.update({f"model.segmenter.{name}": tensor for name, tensor in segmenter.state_dict().items()})
    return weights


def _take_non_persistent_buffers(model: nn.Module, llava: nn.Module) -> None:
    """Non-persistent buffers (rotary `inv_freq`, position ids) are in no state dict: take the LLaVA model's."""
    source = dict(llava.named_buffers())
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta and name in source:
            owner, _, attribute = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attribute, source[name], persistent=False)


# ASaRG's own config fields (not LLaVA's): from_pretrained reads them as the seg setup of a model grown from LLaVA.
ASARG_CONFIG_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(AsargConfig)
    if field.name not in {llava_field.name for llava_field in dataclasses.fields(LlavaConfig)}
)


__all__ = [
    "AsargCxasUNetSegmenter",
    "AsargFindingTokens",
    "AsargForConditionalGeneration",
    "AsargImageOutput",
    "AsargModel",
    "AsargMultiModalProjector",
    "AsargPreTrainedModel",
    "AsargSegLinear",
    "AsargUNetSegmenter",
    "SEGMENTER_ARCHITECTURES",
    "build_segmenter",
    "finding_bce",
]
