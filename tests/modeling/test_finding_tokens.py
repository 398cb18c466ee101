"""Finding tokens (`config.finding_tokens`): the finding classifier's verdicts as one extra image token per finding,
which the language model reads. Off by default (LLaVA's sequence); on, the processor, the model, `generate`, saving
and the SFT recipe agree on the longer image sequence, and only the finding loss trains the classifier."""

from __future__ import annotations

import pytest
import torch
from conftest import prompt_for, xray_like


def _inputs(processor, images: int = 2):
    return processor(
        images=[xray_like(seed=i) for i in range(images)], text=[prompt_for(processor)] * images, return_tensors="pt"
    )


def test_off_by_default_the_sequence_is_llavas(make_asarg):
    model, processor = make_asarg()
    assert model.model.finding_tokens is None and processor.num_finding_tokens == 0
    on_model, on_processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    off = (_inputs(processor)["input_ids"] == model.config.image_token_id).sum(1)
    on = (_inputs(on_processor)["input_ids"] == on_model.config.image_token_id).sum(1)
    assert torch.equal(on, off + on_model.config.num_finding_labels)


def test_they_need_the_finding_loss():
    from transformers import AutoTokenizer  # noqa: F401 (the tiny tokenizer is built below)

    from asarg.training.tiny import tiny_asarg_config, tiny_tokenizer

    with pytest.raises(ValueError, match="finding_loss_weight"):
        tiny_asarg_config(tiny_tokenizer(), finding_tokens=True)


def test_the_tokens_carry_the_classifiers_verdict_and_change_the_report_logits(make_asarg):
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    head = model.model.finding_tokens
    with torch.no_grad():
        head.present.normal_(0, 1.0)  # distinct token tables, as after training
    inputs = _inputs(processor, images=1)
    base = model(**inputs).logits
    tokens = model.model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output[0]
    with torch.no_grad():
        head.bias[3] = 20.0  # finding 3 certain
        lifted = model(**inputs).logits
    tokens_after = model.model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output[0]
    k = model.config.num_finding_labels
    assert tokens.shape[0] == tokens_after.shape[0] and tokens.shape[0] > k
    changed = (tokens_after - tokens).abs().sum(-1) > 1e-6
    assert changed.nonzero().flatten().tolist() == [tokens.shape[0] - k + 3]  # only finding 3's token moved ...
    assert torch.allclose(tokens_after[-k + 3], head.present[3], atol=1e-4)  # ... to "present"
    assert not torch.allclose(base, lifted)  # and the language model reads it


def test_only_the_finding_loss_trains_the_classifier(make_asarg):
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    model.train()
    inputs = _inputs(processor)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    head = model.model.finding_tokens
    assert head.queries.grad is None or head.queries.grad.abs().sum() == 0  # the verdict is detached
    assert head.present.grad.abs().sum() > 0  # the token tables learn from the report
    model.zero_grad()
    out = model(**inputs, finding_labels=torch.ones(2, model.config.num_finding_labels))
    assert out.finding_logits.shape == (2, model.config.num_finding_labels) and model.finding_head is None
    out.finding_loss.backward()
    assert head.weight.grad.abs().sum() > 0 and head.queries.grad.abs().sum() > 0
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


def test_saved_and_loaded_they_generate_with_the_same_sequence(make_asarg, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = (
        AutoModelForImageTextToText.from_pretrained(tmp_path),
        AutoProcessor.from_pretrained(tmp_path),
    )
    assert loaded_processor.num_finding_tokens == model.config.num_finding_labels
    inputs = _inputs(loaded_processor, images=1)
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(loaded.generate(**inputs, max_new_tokens=4, do_sample=False), expected)
    sizes = loaded_processor._get_num_multimodal_tokens(image_sizes=[(32, 32)])
    assert sizes.num_image_tokens[0] == int((inputs["input_ids"] == loaded.config.image_token_id).sum())


def test_a_processor_without_them_gets_a_clear_error(make_asarg):
    model, _ = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    _, plain = make_asarg()
    with pytest.raises(ValueError, match=r"exactly \d+ image tokens"):
        model(**_inputs(plain, images=1))


def _with_device(image, present: bool):
    """A film with a bright line (a tube) when `present`."""
    from PIL import ImageDraw

    image = image.copy()
    if present:
        ImageDraw.Draw(image).rectangle([14, 0, 18, 40], fill=255)
    return image


def test_finding_alignment_learns_a_visible_finding_and_sets_its_threshold(make_asarg):
    """The alignment stage trains the projector and the classifier on the findings alone: on films where finding 13
    is a visible tube, the held-out loss falls, the saved classifier separates the films, the threshold lands between
    them, and the finding token then tells present from absent."""
    from asarg.training.finding_alignment import align_findings

    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True)
    present = [i % 2 == 0 for i in range(48)]
    images = [_with_device(xray_like(seed=i), p) for i, p in enumerate(present)]
    labels = torch.full((48, 14), -1.0)
    labels[:, 13] = torch.tensor(present, dtype=torch.float32)
    record = align_findings(model, processor, images, labels, epochs=30, learning_rate=1e-2, held_out=0.25)
    assert record["held_out_loss"][record["epoch"] - 1] < record["held_out_loss"][0] - 0.1
    threshold = model.config.finding_thresholds[13]
    assert model.config.finding_thresholds[:13] == [0.5] * 13  # unknown findings keep the plain midpoint
    inputs = processor(images=images, text=[processor.image_token] * 48, return_tensors="pt")
    with torch.no_grad():
        tokens = model.model.get_image_features(
            inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"], return_dict=True
        ).pooler_output
        tokens = torch.stack(list(tokens))
        probability = model.model.finding_logits(tokens)[:, 13].sigmoid()
    truth = torch.tensor(present)
    assert ((probability >= threshold) == truth).float().mean() >= 0.9
    head = model.model.finding_tokens
    toward_present = ((tokens[:, -1] - head.absent[13]) @ (head.present[13] - head.absent[13])) / (
        head.present[13] - head.absent[13]
    ).square().sum()
    assert toward_present[truth].min() > toward_present[~truth].max() - 1e-6


def test_finding_alignment_needs_finding_tokens(make_asarg):
    from asarg.training.finding_alignment import align_findings

    model, processor = make_asarg(finding_loss_weight=1.0)
    with pytest.raises(ValueError, match="finding_tokens"):
        align_findings(model, processor, [xray_like()], torch.zeros(1, 14), epochs=1)


def test_thresholds_are_checked():
    from asarg.training.tiny import tiny_asarg_config, tiny_tokenizer

    with pytest.raises(ValueError, match="finding_thresholds"):
        tiny_asarg_config(tiny_tokenizer(), finding_loss_weight=1.0, finding_tokens=True, finding_thresholds=[0.5])


def test_temperature_zero_gives_the_verdict_alone(make_asarg):
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True, finding_token_temperature=0.0)
    head = model.model.finding_tokens
    with torch.no_grad():
        head.bias.copy_(torch.linspace(-3, 3, 14))
    inputs = _inputs(processor, images=1)
    tokens = model.model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output[0][-14:]
    verdict = (
        model.model.finding_logits(
            model.model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output[0][None]
        )[0]
        >= 0
    )
    expected = torch.where(verdict[:, None], head.present, head.absent)
    assert torch.allclose(tokens, expected, atol=1e-6) and verdict.any() and not verdict.all()
    with pytest.raises(ValueError, match="finding_token_temperature"):
        make_asarg(finding_loss_weight=1.0, finding_tokens=True, finding_token_temperature=-1.0)


def _reads(model, inputs, finding_presence=None, **kwargs):
    """The report logits when the language model reads the image tokens with the finding tokens replaced by
    `finding_presence` (B, K) (None: the classifier's own)."""
    encoded = model.model.get_image_features(
        inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"], return_dict=True
    )
    if finding_presence is not None:
        head, k = model.model.finding_tokens, model.config.num_finding_labels
        tokens = torch.stack(list(encoded.pooler_output))
        encoded.pooler_output = list(torch.cat([tokens[:, :-k], head.embed(finding_presence)], 1))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return model(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": encoded}, **kwargs).logits


def test_verdict_forcing_feeds_the_known_labels_in_training_only(make_asarg):
    """`finding_token_label_rate`: in training the language model reads the study's known labels as its finding tokens
    (unknown entries keep the classifier's verdict); the classifier's own logits and loss do not change; in
    evaluation, and at rate 0, the tokens are the classifier's."""
    model, processor = make_asarg(finding_loss_weight=1.0, finding_tokens=True, finding_token_label_rate=1.0)
    head = model.model.finding_tokens
    with torch.no_grad():
        head.present.normal_(0, 1.0)
    inputs = _inputs(processor, images=2)
    labels = torch.full((2, 14), -1.0)
    labels[0, :7], labels[1, 7:] = 1.0, 0.0
    model.train()
    forced = model(**inputs, finding_labels=labels)
    with torch.no_grad():
        own = model.model.get_image_features(
            inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"], return_dict=True
        ).pooler_output
        own_logits = model.model.finding_logits(torch.stack(list(own)))
        expected = torch.where(labels >= 0, labels, head.presence(own_logits))
        assert torch.allclose(forced.logits, _reads(model, inputs, expected), atol=1e-5)
        assert not torch.allclose(forced.logits, _reads(model, inputs), atol=1e-3)
        assert torch.allclose(forced.finding_logits, own_logits, atol=1e-6)
    forced.finding_loss.backward()
    assert head.queries.grad.abs().sum() > 0  # the finding loss still trains the classifier
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs, finding_labels=labels).logits, _reads(model, inputs), atol=1e-5)
        model.train()
        model.config.finding_token_label_rate = 0.0
        assert torch.allclose(model(**inputs, finding_labels=labels).logits, _reads(model, inputs), atol=1e-5)


def test_verdict_forcing_is_checked():
    from asarg.training.tiny import tiny_asarg_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"finding_token_label_rate must be in \[0, 1\]"):
        tiny_asarg_config(tokenizer, finding_loss_weight=1.0, finding_tokens=True, finding_token_label_rate=1.5)
    with pytest.raises(ValueError, match="set finding_tokens=true"):
        tiny_asarg_config(tokenizer, finding_loss_weight=1.0, finding_token_label_rate=0.5)


def test_finding_sides_need_tokens_that_count_them():
    from asarg.training.tiny import tiny_asarg_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    sides = {"finding_sides": ["Pleural Effusion"], "finding_loss_weight": 1.0}
    with pytest.raises(ValueError, match="finding_sides"):
        tiny_asarg_config(tokenizer, **sides)  # no finding tokens
    with pytest.raises(ValueError, match="num_finding_labels"):
        tiny_asarg_config(tokenizer, finding_tokens=True, num_finding_labels=2, **sides)
    assert tiny_asarg_config(tokenizer, finding_tokens=True, num_finding_labels=16, **sides).finding_sides


_GATED = {
    "finding_loss_weight": 1.0,
    "finding_tokens": True,
    "finding_sides": ["Pleural Effusion"],
    "num_finding_labels": 16,
    "seg_class_names": ["right lung", "left lung", "heart", "spine"],
}


def _sided_maps(batch: int = 1) -> torch.Tensor:
    """(B, 4, 32, 32) maps: the patient's right lung on the image's left half, the left lung on its right half."""
    maps = torch.zeros(batch, 4, 32, 32)
    maps[:, 0, :, :16], maps[:, 1, :, 16:], maps[:, 2, 8:24, 8:24] = 1.0, 1.0, 1.0
    return maps


def test_the_side_gate_pools_each_sided_token_over_its_own_side_only(make_asarg):
    """`finding_side_gate`: the right token of a sided observation looks only at patches of the patient's right (by
    the seg maps), the left token only at the left; the 14 observation tokens look where they did without the gate;
    the forward's finding logits are the ones the public seam gives for the same seg columns."""
    gated, processor = make_asarg(**_GATED, finding_side_gate=True)
    free, _ = make_asarg(**_GATED)
    free.load_state_dict(gated.state_dict())
    inputs = _inputs(processor, images=1)
    maps = _sided_maps()
    with torch.no_grad():
        base = gated.model
        seg = base.get_seg_tokens(inputs["pixel_values"], seg_pixel_values=inputs["seg_pixel_values"], seg_maps=maps)
        tokens = base.project_image_tokens(base.get_vision_features(inputs["pixel_values"]), seg)
        looks = base.finding_attention(tokens, seg)[0]
        free_looks = free.model.finding_attention(tokens, seg)[0]
        out = gated(**inputs, seg_maps=maps, finding_labels=torch.zeros(1, 16))
    image_left = torch.zeros(4, 4, dtype=torch.bool)
    image_left[:, :2] = True
    right, left = 14, 15  # Pleural Effusion (right), (left)
    assert looks[right][image_left.flatten()].sum() > 0.999 and looks[left][~image_left.flatten()].sum() > 0.999
    assert free_looks[right][image_left.flatten()].sum() < 0.9  # without the gate the query looks everywhere
    assert torch.allclose(looks[:14], free_looks[:14], atol=1e-6)
    assert torch.allclose(out.finding_logits, base.finding_logits(tokens, seg), atol=1e-5)
    with pytest.raises(ValueError, match="gated by anatomy"):
        base.finding_logits(tokens)  # the gate needs the seg columns the tokens were projected with


def test_the_side_gate_is_checked():
    from asarg.training.tiny import tiny_asarg_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="needs finding_sides"):
        tiny_asarg_config(
            tokenizer, **{**_GATED, "finding_sides": None, "num_finding_labels": 14}, finding_side_gate=True
        )
    with pytest.raises(ValueError, match="named for each side"):
        tiny_asarg_config(tokenizer, **{**_GATED, "seg_class_names": None}, finding_side_gate=True)
    config = tiny_asarg_config(tokenizer, **_GATED, finding_side_gate=True)
    assert config.side_class_indices() == ([0], [1])
