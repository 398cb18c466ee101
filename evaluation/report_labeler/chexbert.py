"""CheXbert labeler backend (`labeler="chexbert"`) for a checkpoint you already have on disk.

Architecture of CheXbert (Smit et al., 2020) as f1chexbert / LLaVA-Rad load it: a BERT encoder (bert-base-uncased
shape), dropout, 13 four-way linear heads (blank / positive / negative / uncertain) and one two-way head for No Finding
(blank / positive), all on the [CLS] state. `chexbert.pth` holds `{"model_state_dict": {...}}` with keys
`module.bert.*` and `module.linear_heads.<i>.*` (saved from `nn.DataParallel`).

torch and transformers are imported here only, when this backend is used: the rule-based labeler needs neither.
Nothing is downloaded: the tokenizer (and, for a non-base shape, config.json) come from local folders.
"""

from __future__ import annotations

import math
from pathlib import Path

from .constants import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN

# Head order of CheXbert (f1chexbert's CONDITIONS); head 13 is No Finding.
CHEXBERT_CONDITIONS = (*CHEXPERT_LABELS[1:3], "Lung Opacity", "Lung Lesion", *CHEXPERT_LABELS[5:], "No Finding")
# Head class index -> labeler value (0 blank, 1 positive, 2 negative, 3 uncertain).
CLASS_TO_VALUE = (math.nan, POSITIVE, NEGATIVE, UNCERTAIN)


def build_chexbert(config):
    """The CheXbert module for a `BertConfig` (random weights)."""
    import torch
    from torch import nn
    from transformers import BertModel

    class CheXbert(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=True)
            self.dropout = nn.Dropout(0.1)
            hidden = config.hidden_size
            heads = [nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)]
            self.linear_heads = nn.ModuleList(heads)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
            cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask)[0][:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return CheXbert()


class CheXbertLabeler:
    name = "chexbert"

    def __init__(
        self,
        checkpoint: str | Path,
        tokenizer_path: str | Path | None = None,
        config_path: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
    ):
        """`checkpoint`: chexbert.pth. `tokenizer_path`: folder of a bert-base-uncased tokenizer (default: the
        checkpoint's folder). `config_path`: folder or config.json of the encoder (default: config.json beside the
        checkpoint if there is one, else bert-base-uncased's shape)."""
        try:
            import torch
            from transformers import AutoTokenizer, BertConfig
        except ImportError as err:  # pragma: no cover - torch/transformers are core dependencies of asarg
            raise ImportError("labeler='chexbert' needs torch and transformers installed.") from err
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise ValueError(f"CheXbert checkpoint {checkpoint} does not exist; pass the path of chexbert.pth.")
        folder = checkpoint.parent
        tokenizer_path = Path(tokenizer_path) if tokenizer_path else folder
        config_file = Path(config_path) if config_path else folder / "config.json"
        if config_file.is_dir():
            config_file = config_file / "config.json"
        config = BertConfig.from_json_file(str(config_file)) if config_file.is_file() else BertConfig()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"No tokenizer in {tokenizer_path}: save bert-base-uncased's tokenizer there "
                "(tokenizer.save_pretrained) or pass tokenizer_path."
            ) from err
        self.model = build_chexbert(config)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model_state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # Older BertModel checkpoints carry position_ids buffers; anything else missing means the wrong file.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"{checkpoint} is not a CheXbert checkpoint: missing {missing[:5]}...")
        self.model.to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length

    def label_many(self, reports) -> list[list[float]]:
        import torch

        rows: list[list[float]] = []
        for i in range(0, len(reports), self.batch_size):
            batch = [" ".join(r.split()) for r in reports[i : i + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            classes = torch.stack([head.argmax(-1) for head in logits], dim=1).cpu().tolist()
            for row in classes:
                by_name = {name: CLASS_TO_VALUE[c] for name, c in zip(CHEXBERT_CONDITIONS, row, strict=True)}
                rows.append([by_name[name] for name in CHEXPERT_LABELS])
        return rows
