"""ASaRG configuration.

Hub file: imports only the standard library and `transformers` (it is copied next to the weights by
`save_pretrained` and loaded with `trust_remote_code=True`; it must not import anything of this repository).
"""

from typing import Any, Literal

from transformers.models.llava.configuration_llava import LlavaConfig

# The 159 anatomy classes of CXAS (PAX-Ray++ label set), in the channel order of its logits.
# Source: cxas 0.0.20, cxas/data/paxray_labels.json (MIT).
CXAS_CLASS_NAMES: tuple[str, ...] = (
    "spine",
    "cervical spine",
    "thoracic spine",
    "lumbar spine",
    "vertebrae C1",
    "vertebrae C2",
    "vertebrae C3",
    "vertebrae C4",
    "vertebrae C5",
    "vertebrae C6",
    "vertebrae C7",
    "vertebrae T1",
    "vertebrae T2",
    "vertebrae T3",
    "vertebrae T4",
    "vertebrae T5",
    "vertebrae T6",
    "vertebrae T7",
    "vertebrae T8",
    "vertebrae T9",
    "vertebrae T10",
    "vertebrae T11",
    "vertebrae T12",
    "vertebrae L1",
    "vertebrae L2",
    "vertebrae L3",
    "vertebrae L4",
    "vertebrae L5",
    "rib_cartilage",
    "sternum",
    "clavicles",
    "clavicle left",
    "clavicle right",
    "scapulas",
    "scapula left",
    "scapula right",
    "posterior 12th rib right",
    "posterior 12th rib left",
    "anterior 11th rib right",
    "posterior 11th rib right",
    "anterior 11th rib left",
    "posterior 11th rib left",
    "anterior 10th rib right",
    "posterior 10th rib right",
    "anterior 10th rib left",
    "posterior 10th rib left",
    "anterior 9th rib right",
    "posterior 9th rib right",
    "anterior 9th rib left",
    "posterior 9th rib left",
    "anterior 8th rib right",
    "posterior 8th rib right",
    "anterior 8th rib left",
    "posterior 8th rib left",
    "anterior 7th rib right",
    "posterior 7th rib right",
    "anterior 7th rib left",
    "posterior 7th rib left",
    "anterior 6th rib right",
    "posterior 6th rib right",
    "anterior 6th rib left",
    "posterior 6th rib left",
    "anterior 5th rib right",
    "posterior 5th rib right",
    "anterior 5th rib left",
    "posterior 5th rib left",
    "anterior 4th rib right",
    "posterior 4th rib right",
    "anterior 4th rib left",
    "posterior 4th rib left",
    "anterior 3rd rib right",
    "posterior 3rd rib right",
    "anterior 3rd rib left",
    "posterior 3rd rib left",
    "anterior 2nd rib right",
    "posterior 2nd rib right",
    "anterior 2nd rib left",
    "posterior 2nd rib left",
    "anterior 1st rib right",
    "posterior 1st rib right",
    "anterior 1st rib left",
    "posterior 1st rib left",
    "12th rib",
    "posterior 11th rib",
    "anterior 11th rib",
    "posterior 10th rib",
    "anterior 10th rib",
    "posterior 9th rib",
    "anterior 9th rib",
    "posterior 8th rib",
    "anterior 8th rib",
    "posterior 7th rib",
    "anterior 7th rib",
    "posterior 6th rib",
    "anterior 6th rib",
    "posterior 5th rib",
    "anterior 5th rib",
    "posterior 4th rib",
    "anterior 4th rib",
    "posterior 3rd rib",
    "anterior 3rd rib",
    "posterior 2nd rib",
    "anterior 2nd rib",
    "posterior 1st rib",
    "anterior 1st rib",
    "diaphragm",
    "left hemidiaphragm",
    "right hemidiaphragm",
    "stomach",
    "small bowel",
    "duodenum",
    "liver",
    "pancreas",
    "kidney left",
    "kidney right",
    "cardiomediastinum",
    "upper mediastinum",
    "lower mediastinum",
    "anterior mediastinum",
    "middle mediastinum",
    "posterior mediastinum",
    "heart",
    "heart atrium left",
    "heart atrium right",
    "heart myocardium",
    "heart ventricle left",
    "heart ventricle right",
    "aorta",
    "ascending aorta",
    "descending aorta",
    "aortic arch",
    "pulmonary artery",
    "inferior vena cava",
    "esophagus",
    "lung",
    "right lung",
    "left lung",
    "lung base",
    "mid zone lung",
    "upper zone lung",
    "apical zone lung",
    "right upper zone lung",
    "right mid zone lung",
    "right lung base",
    "right apical zone lung",
    "left upper zone lung",
    "left mid zone lung",
    "left lung base",
    "left apical zone lung",
    "lung lower lobe left",
    "lung upper lobe left",
    "lung lower lobe right",
    "lung middle lobe right",
    "lung upper lobe right",
    "trachea",
    "tracheal bifurcation",
    "breast",
    "breast left",
    "breast right",
)


def default_segmenter_config(
    num_classes: int = len(CXAS_CLASS_NAMES),
    feature_channels: int = 128,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    image_size: int = 512,
) -> dict[str, Any]:
    """Config of the built-in pure-torch U-Net segmenter (`AsargUNetSegmenter`).

    `image_mean`/`image_std` are ImageNet statistics, as CXAS normalises its input; the processor reads them
    (through its own copy) to build `seg_pixel_values`.
    """
    return {
        "architecture": "unet",
        "in_channels": 3,
        "num_classes": num_classes,
        "widths": list(widths),
        "feature_channels": feature_channels,
        "image_size": image_size,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }


class AsargConfig(LlavaConfig):
    r"""Configuration of ASaRG: LLaVA whose projector also reads anatomy segmentation per visual token.

    All LLaVA fields are inherited. Added fields:

    use_seg_features (`bool`): concatenate the segmenter's intermediate feature map (C channels) to every visual token.
    use_seg_maps (`bool`): concatenate the K per-class segmentation maps (area-pooled coverage fractions).
        With both switches off the model is exactly LLaVA (same parameters, same logits).
    num_seg_classes (`int`): K, the number of segmentation classes the projector reads.
    seg_class_names (`list[str]`): the K class names, in channel order (defaults to CXAS's 159 names when K == 159,
        else `class_0 ... class_{K-1}`). Used for tracing report sentences back to anatomy.
    seg_feature_channels (`int`): C, channels of the intermediate feature map.
    segmenter_config (`dict` or `None`): the built-in segmenter (see `default_segmenter_config`); `None` when the
        segmentation inputs are always given precomputed (`seg_maps`, `seg_features`).
    seg_map_activation (`"threshold"` or `"sigmoid"`): how the built-in segmenter's logits become maps: binary masks
        at 0.5 as CXAS ships them (`segmentation_preds`), or soft probabilities.
    freeze_segmenter (`bool`): keep the built-in segmenter frozen (no gradients, always in eval mode) — the paper's
        specialist model is a fixed, pretrained component.
    missing_seg_inputs (`"warn"` or `"error"`): what inference does when the config uses segmentation but no seg
        input reached the model (and the built-in segmenter cannot run): `"warn"` logs a warning and uses zeros, which
        makes the seg columns inert (the LLaVA-baseline behaviour); `"error"` raises. Training always raises.
    """

    model_type = "asarg"

    use_seg_features: bool = False
    use_seg_maps: bool = False
    num_seg_classes: int = len(CXAS_CLASS_NAMES)
    seg_class_names: list[str] | None = None
    seg_feature_channels: int = 128
    segmenter_config: dict | None = None
    seg_map_activation: Literal["threshold", "sigmoid"] = "threshold"
    freeze_segmenter: bool = True
    missing_seg_inputs: Literal["warn", "error"] = "warn"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.seg_class_names is None:
            if self.num_seg_classes == len(CXAS_CLASS_NAMES):
                self.seg_class_names = list(CXAS_CLASS_NAMES)
            else:
                self.seg_class_names = [f"class_{i}" for i in range(self.num_seg_classes)]
        self._check_seg_fields()

    def _check_seg_fields(self) -> None:
        if self.num_seg_classes < 1:
            raise ValueError(f"num_seg_classes must be >= 1, got {self.num_seg_classes}.")
        if self.seg_feature_channels < 1:
            raise ValueError(f"seg_feature_channels must be >= 1, got {self.seg_feature_channels}.")
        if len(self.seg_class_names) != self.num_seg_classes:
            raise ValueError(
                f"seg_class_names has {len(self.seg_class_names)} names but num_seg_classes={self.num_seg_classes}; "
                "give one name per segmentation channel."
            )
        seg = self.segmenter_config
        if seg is None:
            return
        if seg.get("num_classes") != self.num_seg_classes:
            raise ValueError(
                f"segmenter_config['num_classes']={seg.get('num_classes')} but num_seg_classes={self.num_seg_classes}; "
                "the built-in segmenter must produce exactly the maps the projector reads."
            )
        if seg.get("feature_channels") != self.seg_feature_channels:
            raise ValueError(
                f"segmenter_config['feature_channels']={seg.get('feature_channels')} but "
                f"seg_feature_channels={self.seg_feature_channels}; they must match."
            )

    @property
    def seg_input_width(self) -> int:
        """Number of projector input columns added per visual token (0 for plain LLaVA)."""
        return self.seg_feature_channels * self.use_seg_features + self.num_seg_classes * self.use_seg_maps


__all__ = ["AsargConfig", "CXAS_CLASS_NAMES", "default_segmenter_config"]
