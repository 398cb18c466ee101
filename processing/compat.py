"""The library internals this package relies on, in one place, each with the reason and a test
(`tests/test_compat.py`) that fails when a library release moves it. The Hub files in `modeling_asarg/` keep their
two uses of transformers internals (`SubConfigSpec`, the `is_custom_code` override) beside the code they serve,
because a remote-code model cannot import this package; `tests/modeling/test_llava_behaviours.py` shows why each is
needed.
"""

from __future__ import annotations

# TRL builds this collator inside SFTTrainer for vision-language data but does not export it; the seg-cache collator
# extends it so that a cached batch is exactly TRL's batch plus the seg entries.
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

__all__ = ["DataCollatorForVisionLanguageModeling", "lora_target_matches"]


def lora_target_matches(peft_config, module_name: str) -> bool:
    """Whether PEFT would put an adapter on `module_name` under `peft_config` (its own matcher: regex or names).

    PEFT exposes the matcher only in `peft.tuners.tuners_utils`; reading it before `get_peft_model` lets a recipe refuse
    LoRA targets outside the language model without building the adapted model first."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return bool(check_target_module_exists(peft_config, module_name))
