"""TRL collator that feeds cached segmentation to ASaRG instead of running the segmenter in every training step.

`AsargSegCacheCollator(processor, seg_cache=cache)` is TRL's `DataCollatorForVisionLanguageModeling` plus two batch
entries, `seg_maps (N,K,g,g)` and `seg_features (N,C,g,g)` (N = images in the batch), taken from
* the `seg_cache_keys` column that `SegCache.add_to_dataset` adds (entries read from the cache and verified; a
  missing or corrupt entry is recomputed from the row's image), or
* `seg_maps` / `seg_features` columns stored in the dataset itself.
`seg_pixel_values` is then dropped from the batch, so the model cannot run its segmenter a second time.

Pass it to `SFTTrainer(data_collator=...)` with `SFTConfig(remove_unused_columns=False)`: otherwise TRL drops every
column but images/messages before the collator sees them. With a custom collator TRL does not set the pad token;
the processor's tokenizer must have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .compat import DataCollatorForVisionLanguageModeling
from .seg_cache import KEY_COLUMN

SEG_COLUMNS = ("seg_maps", "seg_features")


@dataclass
class AsargSegCacheCollator(DataCollatorForVisionLanguageModeling):
    seg_cache: Any = None  # asarg.processing.seg_cache.SegCache; needed for rows that carry `seg_cache_keys`

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        examples = [dict(example) for example in examples]  # the parent pops keys: leave the dataset's rows alone
        seg = self._seg_inputs(examples)
        batch = super().torch_call(examples)
        if seg is not None:
            batch.pop("seg_pixel_values", None)
            batch.update(seg)
        return batch

    def _seg_inputs(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor] | None:
        if KEY_COLUMN in examples[0]:
            entries = [entry for example in examples for entry in self._cached_entries(example)]
        elif any(column in examples[0] for column in SEG_COLUMNS):
            entries = [self._stored_entries(example) for example in examples]
        else:
            return None
        return {
            column: torch.from_numpy(np.stack([np.asarray(entry[column], np.float32) for entry in entries]))
            for column in SEG_COLUMNS
            if all(column in entry for entry in entries)
        }

    def _cached_entries(self, example: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        if self.seg_cache is None:
            raise ValueError(
                f"The dataset has a `{KEY_COLUMN}` column but the collator has no seg_cache; pass "
                "AsargSegCacheCollator(processor, seg_cache=SegCache(...))."
            )
        keys = example.pop(KEY_COLUMN)
        images = example.get("images") or ([example["image"]] if "image" in example else [])
        entries = []
        for index, key in enumerate(keys):
            entry = self.seg_cache.load(key)
            if entry is None:  # evicted or corrupted since the dataset was mapped: recompute from the row's image
                if index >= len(images):
                    raise ValueError(
                        f"Cache entry {key} is missing or invalid and its row has no image to recompute it."
                    )
                entry = self.seg_cache.get_or_compute(images[index])
            entries.append(entry)
        return entries

    @staticmethod
    def _stored_entries(example: dict[str, Any]) -> dict[str, np.ndarray]:
        return {column: example.pop(column) for column in SEG_COLUMNS if column in example}


__all__ = ["AsargSegCacheCollator"]
