"""What the model knows, apart from what it writes: a teacher-forced label endpoint that needs no decoding.

Per study and CheXpert observation, the score is log p(positive sentence) - log p(negated sentence), each sentence
teacher-forced as the start of the report right after the image, in the chat turn generation uses
(`asarg.processing.inference.prompt_text`). Per observation, the scores' AUROC against the study's reference label
(the project's labeler on the reference report, uncertain read as negative as CE-F1 reads it) says how well the model
ranks studies with the finding above studies without it; the macro mean is over the observations with both classes
among the scored studies. Greedy reports collapse to a few templates, so their CE-F1 moves only when a template
flips; this endpoint moves with every change in what the model would say.

The sentences are SynthCXR's own wording (`LABEL_SENTENCES`, defined once here). An observation may have several
positive (or negated) sentences, e.g. one per device: their probabilities add up (log-sum-exp), so the score is
log p(any positive sentence) - log p(any negated one). No Finding has none: it is not a finding.

Every (image, sentence) pair is one row of a batched forward through the model (`forward`: the image tokens encoded
once per image and passed as `mm_encoder_outputs`, the prompt run once per image and its cache shared by the image's
sentence rows); `labels` keep only the sentence's tokens (the prompt, the image tokens and the padding are -100), and
a row's score is the sum of those tokens' log-probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from asarg.evaluation.clinical_efficacy import binarize
from asarg.evaluation.report_labeler import label_reports
from asarg.evaluation.report_labeler.constants import CHEXPERT_LABELS
from asarg.evaluation.significance import weighted_auroc
from asarg.processing.inference import prompt_text
from asarg.processing.loaders.common import DEFAULT_PROMPT

IGNORE = -100

# observation -> (positive sentences, negated sentences), in SynthCXR's wording (processing/synthcxr/report.py); the
# project's labeler reads each positive as 1 and each negated one as 0 for its observation (tested).
LABEL_SENTENCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": (
        ("The superior mediastinum is widened.",),
        ("The mediastinal contours are normal.",),
    ),
    "Cardiomegaly": (("The heart is moderately enlarged.",), ("Heart size is normal.",)),
    "Lung Lesion": (
        ("There is a 12 mm pulmonary nodule in the right upper lung.",),
        ("No suspicious pulmonary nodule.",),
    ),
    "Lung Opacity": (("Patchy opacity in the right lung base.",), ("No focal opacity.",)),
    "Edema": (("Mild pulmonary edema.",), ("No pulmonary edema.",)),
    "Consolidation": (("Focal consolidation in the right lung base.",), ("No focal consolidation.",)),
    "Pneumonia": (("Right lung base consolidation, consistent with pneumonia.",), ("No pneumonia.",)),
    "Atelectasis": (("Bibasilar atelectasis.",), ("No atelectasis.",)),
    "Pneumothorax": (("There is a small right apical pneumothorax.",), ("No pneumothorax.",)),
    "Pleural Effusion": (("There is a small right pleural effusion.",), ("No pleural effusion.",)),
    "Pleural Other": (("Right apical pleural thickening.",), ("No pleural thickening.",)),
    "Fracture": (("Acute fracture of the right sixth posterior rib.",), ("No acute fracture is seen.",)),
    "Support Devices": (
        (
            "Endotracheal tube terminates 4 cm above the carina.",
            "Nasogastric tube tip is in the stomach.",
            "Right internal jugular central venous catheter terminates in the superior vena cava.",
            "Left-sided pacemaker with leads in the right atrium and right ventricle.",
        ),
        ("No lines or tubes.",),
    ),
}


def _flatten(label_sentences: Mapping) -> tuple[list[str], list[tuple[list[int], list[int]]]]:
    """(every sentence once, per observation the indices of its positive and its negated sentences)."""
    sentences: list[str] = []
    where = []
    for positives, negatives in label_sentences.values():
        pos = list(range(len(sentences), len(sentences) + len(positives)))
        sentences += positives
        neg = list(range(len(sentences), len(sentences) + len(negatives)))
        sentences += negatives
        where.append((pos, neg))
    return sentences, where


def sentence_rows(processor, sentences: Sequence[str], image, prompt: str = DEFAULT_PROMPT) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` (S, T; right-padded) of the chat turn + each sentence, image tokens expanded, and
    `labels`: the input ids on the sentence's tokens, -100 everywhere else. The turn ends at "ASSISTANT:" and the
    sentence follows after one space, which the tokenizer joins to its first word (as in training, where the turn and
    the report are one text), whether or not the checkpoint's template ends its generation prompt with that space; a
    tokenizer that merges across that point is refused. `image`: any image (only the number of image tokens it expands
    to matters)."""
    text = prompt_text(processor, prompt).rstrip()
    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        full = processor(images=[image] * len(sentences), text=[f"{text} {s}" for s in sentences], padding=True)
        prefix = processor(images=[image], text=[text])["input_ids"][0]
    finally:
        tokenizer.padding_side = padding_side
    ids = torch.as_tensor(full["input_ids"])
    mask = torch.as_tensor(full["attention_mask"])
    start = len(prefix)
    if not torch.equal(ids[:, :start], torch.as_tensor(prefix).expand(len(sentences), -1)):
        raise ValueError("The tokenizer merges the prompt's last token with the sentence: the sentence has no tokens.")
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :start] = IGNORE
    if (labels[:, start] == IGNORE).any():
        raise ValueError("A sentence is empty.")
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.inference_mode()
def sentence_log_likelihoods(
    model,
    processor,
    images: Sequence,
    sentences: Sequence[str],
    prompt: str = DEFAULT_PROMPT,
    image_batch_size: int = 8,
    **seg_inputs,
) -> np.ndarray:
    """(N, S): for every image and sentence, the sum of the log-probabilities of the sentence's tokens, teacher-forced
    after the image. The vision tower and the segmenter run once per image, and so does the prompt: its key/value
    cache is copied to the image's S sentence rows, which then run only their own tokens (the same logits as one
    forward over prompt + sentence, `tests/evaluation/test_label_likelihood.py`). `seg_inputs` (`seg_maps`,
    `seg_features`, one row per image) replace the built-in segmenter's output."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if not len(images) or not len(sentences):
        return np.zeros((len(images), len(sentences)))
    rows = sentence_rows(processor, sentences, images[0], prompt)
    n_sent = len(sentences)
    start = int((rows["labels"] != IGNORE).float().argmax(1).min())  # every row's sentence starts here
    device = model.device
    prefix = rows["input_ids"][:1, :start].to(device)
    tail_ids = rows["input_ids"][:, start:].to(device)
    tail_mask = rows["attention_mask"][:, start:].to(device)
    counted = (rows["labels"][:, start:] != IGNORE).to(device)
    text = prompt_text(processor, prompt)
    out = np.zeros((len(images), n_sent))
    for first in range(0, len(images), image_batch_size):
        chunk = list(images[first : first + image_batch_size])
        b = len(chunk)
        inputs = processor(images=chunk, text=[text] * b, return_tensors="pt").to(device)
        extra = {k: v[first : first + b].to(device) for k, v in seg_inputs.items() if v is not None}
        encoded = model.model.get_image_features(
            inputs["pixel_values"], seg_pixel_values=inputs.get("seg_pixel_values"), return_dict=True, **extra
        ).pooler_output
        head = model(
            input_ids=prefix.expand(b, -1),
            attention_mask=torch.ones(b, start, dtype=torch.long, device=device),
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=list(encoded))},
            use_cache=True,
            logits_to_keep=1,
        )
        cache = head.cache
        cache.batch_repeat_interleave(n_sent)
        tail = model(
            input_ids=tail_ids.repeat(b, 1),
            attention_mask=torch.cat(
                [torch.ones(b * n_sent, start, dtype=torch.long, device=device), tail_mask.repeat(b, 1)], dim=1
            ),
            cache=cache,
            use_cache=True,
        )
        # Token 0 of a sentence is predicted by the prompt's last position, token t + 1 by the sentence's token t.
        first_logits = head.logits[:, -1:].repeat_interleave(n_sent, dim=0)
        logits = torch.cat([first_logits, tail.logits[:, :-1]], dim=1).float()
        targets = tail_ids.repeat(b, 1)
        picked = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        sums = (picked * counted.repeat(b, 1)).sum(-1)
        out[first : first + b] = sums.view(b, n_sent).cpu().numpy()
    return out


def label_scores(
    model,
    processor,
    images: Sequence,
    label_sentences: Mapping = LABEL_SENTENCES,
    prompt: str = DEFAULT_PROMPT,
    image_batch_size: int = 8,
    **seg_inputs,
) -> np.ndarray:
    """(N, L) in the order of `label_sentences`: log p(any positive sentence) - log p(any negated sentence)."""
    sentences, where = _flatten(label_sentences)
    ll = sentence_log_likelihoods(model, processor, images, sentences, prompt, image_batch_size, **seg_inputs)
    logsumexp = np.logaddexp.reduce
    return np.stack([logsumexp(ll[:, pos], axis=1) - logsumexp(ll[:, neg], axis=1) for pos, neg in where], axis=1)


def reference_labels(references: Sequence[str], labels: Sequence[str], uncertain: str = "negative") -> np.ndarray:
    """(N, L) 0/1: the project's labeler on the reference reports, for `labels`, uncertain read as CE-F1 reads it."""
    values = binarize(label_reports(list(references)), uncertain)
    return values[:, [CHEXPERT_LABELS.index(label) for label in labels]].astype(bool)


def label_aurocs(scores, truth, labels: Sequence[str]) -> dict:
    """Per-label AUROC of `scores` (N, L) against the 0/1 `truth` (N, L) (None where a class is missing), the macro
    mean over the labels with both classes, and the positives per label."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    ones = np.ones((1, len(scores)))
    per_label = {}
    for j, label in enumerate(labels):
        value = weighted_auroc(scores[:, j], truth[:, j], ones)[0]
        per_label[label] = None if np.isnan(value) else float(value)
    scored = [label for label, value in per_label.items() if value is not None]
    return {
        "per_label": per_label,
        "macro": float(np.mean([per_label[label] for label in scored])) if scored else None,
        "labels_in_macro": scored,
        "positives": {label: int(truth[:, j].sum()) for j, label in enumerate(labels)},
    }


def evaluate_label_likelihood(
    model,
    processor,
    images: Sequence,
    references: Sequence[str],
    label_sentences: Mapping = LABEL_SENTENCES,
    prompt: str = DEFAULT_PROMPT,
    image_batch_size: int = 8,
    **seg_inputs,
) -> dict:
    """The endpoint for one model on N studies: per-study scores (N, L), the reference labels and the AUROCs."""
    labels = list(label_sentences)
    scores = label_scores(model, processor, images, label_sentences, prompt, image_batch_size, **seg_inputs)
    truth = reference_labels(references, labels)
    return {
        "labels": labels,
        "sentences": {label: {"positive": list(p), "negated": list(n)} for label, (p, n) in label_sentences.items()},
        "scores": np.round(scores, 5).tolist(),
        "reference_labels": truth.astype(int).tolist(),
        **label_aurocs(scores, truth, labels),
    }


__all__ = [
    "LABEL_SENTENCES",
    "evaluate_label_likelihood",
    "label_aurocs",
    "label_scores",
    "reference_labels",
    "sentence_log_likelihoods",
    "sentence_rows",
]
