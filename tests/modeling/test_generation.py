"""generate(): seg fusion runs once per call (prefill), really uses the seg inputs, cache on/off agree."""

from __future__ import annotations

import pytest
import torch
from conftest import prompt_for, xray_like

GREEDY = {"max_new_tokens": 6, "do_sample": False}


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _batch(processor, n: int, padding_side: str = "left"):
    processor.tokenizer.padding_side = padding_side
    prompts = [prompt_for(processor)] + [prompt_for(processor).replace("Findings?", "Describe the lungs, please.")]
    images = [xray_like(seed=i) for i in range(n)]
    return processor(images=images, text=prompts[:n], padding=True, return_tensors="pt")


@pytest.mark.parametrize(
    "generate_kwargs, n",
    [(GREEDY, 1), (GREEDY, 2), ({**GREEDY, "num_beams": 2}, 1), ({**GREEDY, "num_beams": 2}, 2)],
    ids=["greedy", "batched-left-pad", "beam", "batched-beam"],
)
def test_segmenter_and_fusion_run_once_per_generate_call(make_asarg, generate_kwargs, n):
    model, processor = make_asarg(live_seg=True)
    segmenter = CallCounter(model.model.segmenter)
    projector = CallCounter(model.model.multi_modal_projector)
    out = model.generate(**_batch(processor, n), **generate_kwargs)
    assert out.shape[0] == n
    assert (segmenter.calls, projector.calls) == (1, 1)


def test_generate_really_uses_the_seg_inputs(make_asarg):
    model, processor = make_asarg(live_seg=True, builtin_segmenter=False, use_seg_features=False)
    inputs = _batch(processor, 1)
    maps = (torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    run = {"output_scores": True, "return_dict_in_generate": True, **GREEDY}
    with_map = model.generate(**inputs, seg_maps=maps, **run).scores[0]
    one_zeroed = maps.clone()
    one_zeroed[:, 2] = 0
    without = model.generate(**inputs, seg_maps=one_zeroed, **run).scores[0]
    assert (with_map - without).abs().max().item() > 1e-4
    # and the first-step scores are exactly those of a plain forward with the same inputs
    with torch.no_grad():
        forward = model(**inputs, seg_maps=maps).logits[:, -1]
    assert torch.allclose(with_map, forward, atol=1e-5)


def test_cached_and_uncached_greedy_decoding_agree(make_asarg):
    model, processor = make_asarg(live_seg=True)
    inputs = _batch(processor, 2)
    cached = model.generate(**inputs, use_cache=True, **GREEDY)
    uncached = model.generate(**inputs, use_cache=False, **GREEDY)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_matches_single_requests(make_asarg):
    model, processor = make_asarg(live_seg=True)
    batch = _batch(processor, 2)
    together = model.generate(**batch, **GREEDY)[:, batch["input_ids"].shape[1] :]
    processor.tokenizer.padding_side = "left"
    for i in range(2):
        prompt = (
            prompt_for(processor)
            if i == 0
            else prompt_for(processor).replace("Findings?", "Describe the lungs, please.")
        )
        single = processor(images=xray_like(seed=i), text=prompt, return_tensors="pt")
        alone = model.generate(**single, **GREEDY)[:, single["input_ids"].shape[1] :]
        assert torch.equal(alone[0], together[i])
