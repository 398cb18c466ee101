"""ASaRG processor: LLaVA's processor plus segmenter input and user-supplied anatomy masks.

From PIL, numpy or torch images (8/16-bit, grayscale/RGB/RGBA; arrays channel-last, or channel-first C x H x W,
which is transposed) and text it builds every model input:
`input_ids`, `attention_mask`, `pixel_values` (vision tower), `seg_pixel_values` (built-in segmenter: ImageNet
normalisation as CXAS uses, at `seg_image_size`) and, when `segmentation_maps=` is given, `seg_maps` already
area-pooled to the vision patch grid. Images are padded to a square first (LLaVA-1.5's "pad" mode), so the vision
image, the segmenter image and the masks stay pixel-aligned whatever the aspect ratio.

DICOM is read in the repository's `processing/` package, not here. Hub file: imports only numpy, PIL, torch,
transformers, the standard library and `.configuration_asarg`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, LlavaProcessor

from .configuration_asarg import IMAGENET_MEAN, IMAGENET_STD

# USER/ASSISTANT turns; `{% generation %}` marks what the model must learn (TRL's assistant_only_loss). The generation
# prompt ends with "ASSISTANT:", as LLaVA-1.5's: in training the report's first word carries the space after the
# colon (" Enteric"), so a prompt ending in "ASSISTANT: " would end in a lone space token training never saw there.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}{{- eos_token -}}{%- endgeneration -%}{{- '\n' -}}"
    "{%- else -%}{{- message['role'] | upper + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}{{- '\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def min_max_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale one image to 0..255 uint8, as CXAS scales DICOM to [0, 1]; a constant image becomes black.

    Raises `ValueError` on NaN or infinite values.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("The image contains NaN or infinite values.")
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


_CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Deep integer or float images -> uint8. Floats in [0,1] are scaled by 255; anything else is min-max scaled
    per image (`min_max_to_uint8`), which keeps 12-bit data in a 16-bit container from turning black."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1:
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)
    return min_max_to_uint8(array)


def to_rgb_image(image, index: int = 0) -> Image.Image:
    """One input image (PIL, numpy or torch; any bit depth; L/RGB/RGBA) as an 8-bit RGB PIL image.

    Arrays are H x W or H x W x C; a channel-first C x H x W array (C in 1, 3, 4 first and the last dimension not
    in 1, 3, 4: torch's and many readers' layout) is transposed to channel-last. A torch tensor is read as an array.
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"images[{index}] is empty ({image.width}x{image.height} pixels).")
        if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
            return Image.fromarray(_scale_to_uint8(np.asarray(image))).convert("RGB")
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.float() if image.is_floating_point() else image).numpy()  # numpy has no bfloat16
    if isinstance(image, np.ndarray):
        return Image.fromarray(_scale_to_uint8(_channel_last(image, index))).convert("RGB")
    raise ValueError(
        f"images[{index}] is a {type(image).__name__}; expected a PIL.Image.Image, a numpy array or a torch tensor "
        "(H x W, H x W x C or C x H x W). Read files with PIL.Image.open, or DICOM with "
        "`asarg.processing.image_io.load_image`."
    )


def _channel_last(image: np.ndarray, index: int) -> np.ndarray:
    """A real-valued H x W or H x W x 3 array (RGBA loses alpha, one channel becomes H x W)."""
    if image.size == 0:
        raise ValueError(f"images[{index}] is an empty array of shape {image.shape}.")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
        raise ValueError(f"images[{index}] has dtype {image.dtype}; expected integer, float or bool pixels.")
    if image.ndim == 3 and image.shape[0] in _CHANNELS and image.shape[-1] not in _CHANNELS:
        image = image.transpose(1, 2, 0)
    if image.ndim == 3 and image.shape[-1] in _CHANNELS:
        image = image[..., :3] if image.shape[-1] != 1 else image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(
            f"images[{index}] has shape {image.shape}; expected H x W (grayscale), H x W x C or C x H x W with C in "
            "1, 3, 4."
        )
    return image


def _pad_box(width: int, height: int) -> tuple[int, int, int]:
    """Side of the square and the (left, top) offset that centres a width x height image in it."""
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def pad_to_square(image: Image.Image) -> Image.Image:
    side, left, top = _pad_box(*image.size)
    if (left, top) == (0, 0) and image.width == image.height:
        return image
    canvas = Image.new(image.mode, (side, side), 0)  # black: the background of a radiograph
    canvas.paste(image, (left, top))
    return canvas


def seg_pixel_array(image: Image.Image, side: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """`(3, side, side)` float32 input of the built-in segmenter for an (already squared) RGB image: bilinear resize,
    then normalisation. The one definition shared by the processor, the seg cache and segmenter training."""
    array = np.asarray(image.resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return array.transpose(2, 0, 1)


def finding_token_count(config) -> int:
    """The image tokens an ASaRG `config` appends per image after the patch tokens: its finding tokens, or 0."""
    return config.num_finding_labels if getattr(config, "finding_tokens", False) else 0


def _flatten_images(images) -> list:
    if isinstance(images, (list, tuple)):
        return [leaf for item in images for leaf in _flatten_images(item)]
    return [images]


class AsargProcessor(LlavaProcessor):
    r"""LLaVA processor + segmentation inputs.

    Args (besides LlavaProcessor's):
        seg_image_size (`int`, *optional*): side of `seg_pixel_values` for the built-in segmenter (512 for CXAS);
            `None` = do not produce them (models that take precomputed segmentation).
        seg_image_mean, seg_image_std: normalisation of `seg_pixel_values` (ImageNet, as CXAS).
        num_seg_classes (`int`, *optional*): K; masks given with `segmentation_maps=` must have K channels.
        pad_to_square (`bool`): pad images (and masks) to a centred square with black before resizing.
        num_finding_tokens (`int`): image tokens the model appends to each image's after the patch tokens (its
            finding tokens, `config.finding_tokens`: `num_finding_labels`; 0 without them).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=0,
        seg_image_size=None,
        seg_image_mean=IMAGENET_MEAN,
        seg_image_std=IMAGENET_STD,
        num_seg_classes=None,
        pad_to_square=True,
        num_finding_tokens=0,
        **kwargs,
    ):
        self.num_finding_tokens = num_finding_tokens
        self.seg_image_size = seg_image_size
        self.seg_image_mean = list(seg_image_mean)
        self.seg_image_std = list(seg_image_std)
        self.num_seg_classes = num_seg_classes
        self.pad_to_square = pad_to_square
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else DEFAULT_CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @classmethod
    def from_llava_processor(cls, processor, config, **kwargs) -> "AsargProcessor":
        """The processor for an ASaRG model `config`, reusing a LLaVA(-style) processor's image processor, tokenizer and
        chat template; the segmentation settings come from the config (no seg pixels when it has no segmenter)."""
        segmenter = getattr(config, "segmenter_config", None)
        settings = {
            "image_processor": processor.image_processor,
            "tokenizer": processor.tokenizer,
            "patch_size": config.vision_config.patch_size,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            # CLIP-style towers add a CLS token; LLaVA processors carry the right value themselves.
            "num_additional_image_tokens": getattr(processor, "num_additional_image_tokens", 1),
            "chat_template": getattr(processor, "chat_template", None),
            "seg_image_size": getattr(segmenter, "image_size", None),
            "seg_image_mean": getattr(segmenter, "image_mean", None) or IMAGENET_MEAN,
            "seg_image_std": getattr(segmenter, "image_std", None) or IMAGENET_STD,
            "num_seg_classes": getattr(config, "num_seg_classes", None),
            "num_finding_tokens": finding_token_count(config),
        }
        return cls(**{**settings, **kwargs})

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        """LLaVA's image tokens for one image, then one per finding token."""
        return (
            super().replace_image_token(image_inputs, image_idx, **kwargs) + self.image_token * self.num_finding_tokens
        )

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, **kwargs)
        if "num_image_tokens" in data:
            data.num_image_tokens = [count + self.num_finding_tokens for count in data.num_image_tokens]
        return data

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys([*super().model_input_names, "seg_pixel_values", "seg_maps"]))

    def __call__(self, images=None, text=None, segmentation_maps=None, **kwargs) -> BatchFeature:
        """Like LlavaProcessor, plus `seg_pixel_values` and, for `segmentation_maps=` (one K x H x W array per image,
        H x W = that image's size, values in [0, 1]), `seg_maps` area-pooled to the vision patch grid."""
        if images is None:
            if segmentation_maps is not None:
                raise ValueError("segmentation_maps were given without images; give one mask stack per image.")
            return super().__call__(images=None, text=text, **kwargs)
        flat = _flatten_images(images)
        if not flat:
            raise ValueError("`images` is an empty list; pass at least one image or `images=None`.")
        self._check_images_per_sample(images, text)
        originals = [to_rgb_image(image, i) for i, image in enumerate(flat)]
        squared = [pad_to_square(image) for image in originals] if self.pad_to_square else originals
        outputs = super().__call__(images=squared, text=text, **kwargs)

        extra = {}
        if self.seg_image_size:
            extra["seg_pixel_values"] = np.stack([self._seg_pixels(image) for image in squared])
        if segmentation_maps is not None:
            grid = tuple(int(s) // self.patch_size for s in np.asarray(outputs["pixel_values"][0]).shape[-2:])
            extra["seg_maps"] = self._pool_masks(segmentation_maps, originals, grid)
        tensor_type = kwargs.get("return_tensors")
        return BatchFeature({**outputs, **extra}, tensor_type=tensor_type)

    def _check_images_per_sample(self, images, text) -> None:
        """With one list of images per sample, each sample's text must hold one image token per image: checking only
        the totals would answer one sample with another's image."""
        nested = isinstance(images, (list, tuple)) and any(isinstance(item, (list, tuple)) for item in images)
        if not nested or not isinstance(text, (list, tuple)):
            return
        if len(images) != len(text):
            raise ValueError(f"`images` has {len(images)} samples but `text` has {len(text)}; give one per text.")
        for i, (sample, prompt) in enumerate(zip(images, text)):
            count = len(_flatten_images(sample))
            tokens = prompt.count(self.image_token)
            if count != tokens:
                raise ValueError(
                    f"Sample {i} has {count} image(s) but its text has {tokens} image token(s) ({self.image_token!r}); "
                    "each sample's text needs one image placeholder per image of that sample."
                )

    def _seg_pixels(self, image: Image.Image) -> np.ndarray:
        return seg_pixel_array(image, self.seg_image_size, self.seg_image_mean, self.seg_image_std)

    def _pool_masks(self, segmentation_maps, images: list[Image.Image], grid: tuple[int, int]) -> np.ndarray:
        stacks = (
            [segmentation_maps]
            if len(images) == 1 and not isinstance(segmentation_maps, (list, tuple))
            else list(segmentation_maps)
        )
        if len(stacks) != len(images):
            raise ValueError(f"Got {len(stacks)} mask stacks for {len(images)} images; give exactly one per image.")
        pooled = [self._pool_one(stack, image, i, grid) for i, (stack, image) in enumerate(zip(stacks, images))]
        classes = [stack.shape[0] for stack in pooled]
        if len(set(classes)) > 1:  # only possible without num_seg_classes, which checks each stack on its own
            raise ValueError(
                f"segmentation_maps have {classes} classes per image; every image needs the same K classes, in the "
                "model's class order."
            )
        return np.stack(pooled)

    def _pool_one(self, stack, image: Image.Image, index: int, grid: tuple[int, int]) -> np.ndarray:
        array = stack.detach().cpu().numpy() if isinstance(stack, torch.Tensor) else np.asarray(stack)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
            raise ValueError(f"segmentation_maps[{index}] has dtype {array.dtype}; expected float, integer or bool.")
        masks = torch.as_tensor(array).float()
        if masks.dim() != 3:
            raise ValueError(f"segmentation_maps[{index}] has shape {tuple(masks.shape)}; expected K x H x W.")
        if self.num_seg_classes is not None and masks.shape[0] != self.num_seg_classes:
            raise ValueError(
                f"segmentation_maps[{index}] has {masks.shape[0]} classes but this processor expects "
                f"num_seg_classes={self.num_seg_classes} (one channel per class, in the model's class order)."
            )
        if tuple(masks.shape[1:]) != (image.height, image.width):
            raise ValueError(
                f"segmentation_maps[{index}] is {masks.shape[1]}x{masks.shape[2]} but its image is "
                f"{image.height}x{image.width}; masks must be at the image's resolution."
            )
        if not torch.isfinite(masks).all():  # NaN passes any comparison below: checked on its own
            raise ValueError(f"segmentation_maps[{index}] contains NaN or infinite values; masks must be finite.")
        if masks.numel() and (masks.min() < 0 or masks.max() > 1):
            raise ValueError(
                f"segmentation_maps[{index}] has values in [{float(masks.min()):g}, {float(masks.max()):g}], outside "
                "[0, 1]: masks are per-class coverage fractions / probabilities (binary 0/1 or bool masks, or "
                "probabilities). Divide 0-255 masks by 255."
            )
        if self.pad_to_square:
            side, left, top = _pad_box(image.width, image.height)
            masks = F.pad(masks, (left, side - image.width - left, top, side - image.height - top))
        # The same area pooling the model applies, so pooled and full-resolution masks give identical tokens.
        return F.adaptive_avg_pool2d(masks[None], grid)[0].numpy()


__all__ = [
    "AsargProcessor",
    "DEFAULT_CHAT_TEMPLATE",
    "finding_token_count",
    "min_max_to_uint8",
    "pad_to_square",
    "seg_pixel_array",
    "to_rgb_image",
]
