"""Label names and value codes shared by the labelers and the CE metric."""

from __future__ import annotations

# Column order and spelling of the CheXpert labeler's output CSV.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five competition observations that CheXbert-style "F1-5" scores use.
CHEXPERT_5_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# Value codes of a labelled report (NaN = blank = not mentioned).
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0

# Phrase-file stem -> label name ("no_finding" holds the "other findings", not a label of its own).
FILE_TO_LABEL: dict[str, str] = {name.lower().replace(" ", "_"): name for name in CHEXPERT_LABELS}
OTHER_FINDING = "Other Finding"
FILE_TO_LABEL["no_finding"] = OTHER_FINDING

# Labels whose positive/uncertain mention does not rule out "No Finding" (as in the CheXpert labeler).
NOT_BLOCKING_NO_FINDING: frozenset[str] = frozenset({"No Finding", "Support Devices"})
