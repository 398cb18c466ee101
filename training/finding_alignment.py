"""Finding alignment: a recipe stage before the report is trained (`finding_alignment_epochs`), LLaVA's projector
alignment with findings for captions.

The finding-token classifier (`AsargModel.finding_tokens`) is trained on the study's findings together with the
projector, from the frozen vision tower's and segmenter's outputs alone: no language model runs, so an epoch costs
a small fraction of an SFT step per study and the classifier can converge. The report stage then starts from finding
tokens that already carry a verdict, instead of a classifier that learns one batch of 16 per step beside the language
model (measured in issue 20: after an 800-step SFT run the joint classifier read Support Devices at AUROC 0.55 where a
linear probe on the same inputs reads 0.84). Each finding's threshold, the probability of best F1 on training studies
held out from this stage, goes into `config.finding_thresholds`: the probability that puts its token half-way.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from modeling_asarg.modeling_asarg import finding_bce

logger = logging.getLogger("asarg.sft")


@torch.no_grad()
def encode_studies(model, processor, images: list, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The projector's inputs of every image: vision tokens `(N, T, D)` and seg columns `(N, T', C+K)` (None with seg
    off), through the model's public seams, with the frozen tower and segmenter in eval mode."""
    base = model.model
    was_training = base.training
    base.eval()
    vision, seg = [], []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            inputs = processor(images=chunk, text=[processor.image_token] * len(chunk), return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(base.device, base.dtype)
            vision.append(base.get_vision_features(pixel_values))
            seg_pixel_values = inputs.get("seg_pixel_values")
            seg_pixel_values = None if seg_pixel_values is None else seg_pixel_values.to(base.device)
            seg.append(base.get_seg_tokens(pixel_values, seg_pixel_values=seg_pixel_values))
    finally:
        base.train(was_training)
    return torch.cat(vision), (None if seg[0] is None else torch.cat(seg))


def best_f1_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per finding, the probability threshold of best F1 on `labels` (1 positive; unknown entries, below 0, are
    ignored); 0.5 for a finding without a positive."""
    thresholds = []
    for k in range(labels.shape[1]):
        known = labels[:, k] >= 0
        truth, scores = labels[known, k] == 1, probabilities[known, k]
        if not truth.any():
            thresholds.append(0.5)
            continue
        candidates = np.unique(np.clip(scores, 1e-4, 1 - 1e-4))
        f1 = [2 * (truth & (scores >= t)).sum() / (truth.sum() + (scores >= t).sum()) for t in candidates]
        thresholds.append(float(candidates[int(np.argmax(f1))]))
    return thresholds


def align_findings(
    model,
    processor,
    images: list,
    labels,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    held_out: float = 0.1,
    patience: int = 5,
    seed: int = 0,
) -> dict:
    """Train the projector and the finding-token classifier of `model` on `labels` (one row of `num_finding_labels`
    per image: 1 present, 0 absent, below 0 unknown) for up to `epochs`, keeping the epoch of lowest loss on the
    `held_out` share of the studies (stopping after `patience` epochs without a better one); then set
    `config.finding_thresholds` on those held-out studies. Returns the record (losses, the chosen epoch, thresholds)."""
    base = model.model
    if base.finding_tokens is None:
        raise ValueError("finding alignment trains the finding tokens' classifier: set finding_tokens=true.")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if labels.shape != (len(images), model.config.num_finding_labels):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected one row of findings per image.")
    vision, seg = encode_studies(model, processor, images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    cut = max(int(len(images) * held_out), 1)
    held, fit = order[:cut], order[cut:]
    modules = (base.multi_modal_projector, base.finding_tokens)
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)

    def logits_of(rows: torch.Tensor) -> torch.Tensor:
        seg_rows = None if seg is None else seg[rows]
        return base.finding_logits(base.project_image_tokens(vision[rows], seg_rows), seg_rows)

    best, record = None, {"held_out_loss": [], "train_loss": []}
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        base.train()
        total = 0.0
        for rows in fit[torch.randperm(len(fit), generator=generator)].split(batch_size):
            loss = finding_bce(logits_of(rows), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        base.eval()
        with torch.no_grad():
            held_loss = float(finding_bce(logits_of(held), labels[held]))
        record["train_loss"].append(total / len(fit))
        record["held_out_loss"].append(held_loss)
        logger.info("finding alignment epoch %d: train %.4f, held out %.4f", epoch + 1, total / len(fit), held_loss)
        if best is None or held_loss < best[0]:
            best = (held_loss, epoch, [copy.deepcopy(module.state_dict()) for module in modules])
        elif epoch - best[1] >= patience:
            break
    for module, state in zip(modules, best[2]):
        module.load_state_dict(state)
    base.eval()
    with torch.no_grad():
        probabilities = logits_of(held).sigmoid().numpy()
    model.config.finding_thresholds = best_f1_thresholds(probabilities, labels[held].numpy())
    record |= {"epoch": best[1] + 1, "thresholds": model.config.finding_thresholds, "held_out_studies": cut}
    return record
