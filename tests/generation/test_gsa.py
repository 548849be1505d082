"""Exactness of Group-Shared Attention on a tiny FLUX transformer (float32, CPU)."""

import pytest
import torch
from peft import LoraConfig

from storyloop.generation.flux import (References, TextEmbeds, predict, predict_with_references,
                                       write_reference_cache)
from storyloop.generation.gsa import GSAContext, has_gsa, install_gsa, remove_gsa
from storyloop.generation.sampling import sample
from tests.generation.conftest import GRID, references, targets, text

ATOL = 1e-5


def test_gsa_with_zero_references_equals_stock_attention(transformer):
    x, txt, sigma = targets(2), text(2, 1), torch.tensor([0.3, 0.8])
    stock = predict(transformer, x, sigma, txt, GRID)
    install_gsa(transformer)
    assert has_gsa(transformer)
    assert torch.allclose(predict(transformer, x, sigma, txt, GRID), stock, atol=ATOL)  # no context at all
    no_refs = References(torch.zeros(0, 16, 16), text(0, 2), GRID)
    assert torch.allclose(predict_with_references(transformer, x, sigma, txt, GRID, no_refs), stock, atol=ATOL)
    remove_gsa(transformer)
    assert not has_gsa(transformer)


def test_references_outputs_do_not_change_when_a_target_is_added(transformer):
    refs = references(2)
    stock_refs = predict(transformer, refs.tokens, torch.zeros(2), refs.text, GRID)  # stock FLUX at t = 0
    install_gsa(transformer)
    captured = {}
    hook = transformer.proj_out.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    predict_with_references(transformer, targets(1), torch.tensor([0.6]), text(1, 1), GRID, refs)
    hook.remove()
    assert torch.allclose(captured["out"][1:], stock_refs, atol=ATOL)


def test_target_output_changes_with_references(transformer):
    install_gsa(transformer)
    x, txt, sigma = targets(1), text(1, 1), torch.tensor([0.5])
    alone = predict(transformer, x, sigma, txt, GRID)
    with_a = predict_with_references(transformer, x, sigma, txt, GRID, references(1, seed=10))
    with_b = predict_with_references(transformer, x, sigma, txt, GRID, references(1, seed=20))
    assert (with_a - alone).abs().max() > 1e-3
    assert (with_a - with_b).abs().max() > 1e-3


def test_target_never_sees_reference_text(transformer):
    install_gsa(transformer)
    x, txt, sigma = targets(1), text(1, 1), torch.tensor([0.5])
    refs = references(2)
    other = text(2, 99)
    other_text = References(refs.tokens, type(other)(other.prompt_embeds, refs.text.pooled), GRID)
    # Reference text tokens shape the reference's own image tokens from the first block on, so compare
    # at the first layer: the K/V a target reads there hold the reference's image tokens only.
    cache_a = write_reference_cache(transformer, refs)
    cache_b = write_reference_cache(transformer, other_text)
    first = "transformer_blocks.0.attn"
    assert torch.equal(cache_a.cache[first][0], cache_b.cache[first][0])
    assert cache_a.cache[first][0].shape[1] == GRID[0] * GRID[1]  # image tokens only, no text tokens


def test_reference_slots_get_distinct_positions(transformer):
    install_gsa(transformer)
    x, txt, sigma = targets(1), text(1, 1), torch.tensor([0.5])
    refs = references(2)
    swapped = References(refs.tokens.flip(0), References(refs.tokens, refs.text, GRID).text, GRID)
    a = predict_with_references(transformer, x, sigma, txt, GRID, refs)
    b = predict_with_references(transformer, x, sigma, txt, GRID, swapped)
    assert (a - b).abs().max() > 1e-4  # order matters: slot i has its own position offset


def test_cached_prediction_equals_batched_prediction(transformer):
    install_gsa(transformer)
    refs, x, txt, sigma = references(3), targets(2), text(2, 1), torch.tensor([0.2, 0.9])
    uncached = predict_with_references(transformer, x, sigma, txt, GRID, refs)
    with torch.no_grad():
        cache = write_reference_cache(transformer, refs)
    cached = predict(transformer, x, sigma, txt, GRID, cache=cache)
    assert torch.allclose(cached, uncached, atol=ATOL)


@pytest.mark.parametrize("num_refs", [0, 1, 3])
def test_cached_refs_equal_uncached_over_full_loop(transformer, scheduler, num_refs):
    install_gsa(transformer)
    refs = references(num_refs) if num_refs else None
    kw = dict(text=text(2, 1), grid=GRID, seeds=[11, 12], refs=refs, num_inference_steps=8)
    cached = sample(transformer, scheduler, use_cache=True, **kw)
    uncached = sample(transformer, scheduler, use_cache=False, **kw)
    assert cached.shape == (2, 16, 16)
    assert (cached - uncached).abs().max() < 1e-4


def test_reference_guidance_interpolates_between_with_and_without_references(transformer, scheduler):
    """s = 1 is the plain GSA sampler, s = 0 the sampler without references; any other s moves beyond."""
    install_gsa(transformer)
    kw = dict(text=text(2, 1), grid=GRID, seeds=[11, 12], num_inference_steps=6)
    refs = references(2)
    with_refs = sample(transformer, scheduler, refs=refs, **kw)
    without = sample(transformer, scheduler, refs=None, **kw)
    assert torch.equal(sample(transformer, scheduler, refs=refs, reference_guidance_scale=1.0, **kw), with_refs)
    assert torch.equal(sample(transformer, scheduler, refs=refs, reference_guidance_scale=0.0, **kw), without)
    guided = sample(transformer, scheduler, refs=refs, reference_guidance_scale=3.0, **kw)
    assert (guided - with_refs).abs().max() > 1e-3 and (guided - without).abs().max() > 1e-3
    uncached = sample(transformer, scheduler, refs=refs, reference_guidance_scale=3.0, use_cache=False, **kw)
    assert (guided - uncached).abs().max() < 1e-4


@pytest.mark.parametrize("path", ["cache written by sample", "cache passed in", "no cache"])
def test_reference_guidance_zero_costs_one_prediction_a_step(transformer, scheduler, path):
    """s = 0 makes no prediction with the references: one forward a step, as without them."""
    install_gsa(transformer)
    refs = references(2)
    cache = write_reference_cache(transformer, refs) if path == "cache passed in" else None
    calls = []
    hook = transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        sample(transformer, scheduler, text(2, 1), GRID, [11, 12], refs, num_inference_steps=6,
               use_cache=path != "no cache", reference_cache=cache, reference_guidance_scale=0.0)
    finally:
        hook.remove()
    assert len(calls) == 6


def test_lora_gradients_reach_target_and_reference_paths(transformer):
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v", "add_k_proj"]))
    install_gsa(transformer)
    refs = references(2)
    ref_tokens = refs.tokens.clone().requires_grad_(True)
    out = predict_with_references(transformer, targets(1), torch.tensor([0.5]), text(1, 1), GRID,
                                  References(ref_tokens, refs.text, GRID))
    out.pow(2).mean().backward()  # a loss on the target only
    assert ref_tokens.grad is not None and ref_tokens.grad.abs().max() > 0  # flows into the reference path
    lora = {n: p.grad for n, p in transformer.named_parameters() if "lora_" in n}
    assert lora and all(g is not None for g in lora.values())
    assert any(g.abs().max() > 0 for n, g in lora.items() if "single_transformer_blocks" in n)


def test_gradient_checkpointing_gives_the_same_gradients(transformer):
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v"]))
    install_gsa(transformer)
    refs, x, txt = references(2), targets(1), text(1, 1)

    def grads():
        transformer.zero_grad()
        predict_with_references(transformer, x, torch.tensor([0.4]), txt, GRID, refs).pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in transformer.named_parameters() if p.grad is not None}

    plain = grads()
    transformer.enable_gradient_checkpointing()
    transformer.train()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-5) for k in plain)


def test_attention_mask_is_refused(transformer):
    install_gsa(transformer)
    proc = transformer.transformer_blocks[0].attn.processor
    ctx = GSAContext("read", 0, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="attention mask"):
        proc(transformer.transformer_blocks[0].attn, torch.zeros(1, 4, 32), torch.zeros(1, 2, 32),
             attention_mask=torch.ones(1, 6), gsa=ctx)


def test_grouped_batch_equals_each_group_alone(transformer):
    install_gsa(transformer)
    x, txt, sigma = targets(2), text(2, 1), torch.tensor([0.3, 0.7])
    ra, rb = references(2, seed=1), references(2, seed=2)
    both = References(torch.cat([ra.tokens, rb.tokens]), ra.text.cat(rb.text), GRID)
    grouped = predict_with_references(transformer, x, sigma, txt, GRID, both, refs_per_target=2)
    first, second = (TextEmbeds(txt.prompt_embeds[i:i + 1], txt.pooled[i:i + 1]) for i in (0, 1))
    a = predict_with_references(transformer, x[:1], sigma[:1], first, GRID, ra)
    b = predict_with_references(transformer, x[1:], sigma[1:], second, GRID, rb)
    assert torch.allclose(grouped, torch.cat([a, b]), atol=ATOL)


def test_gsa_runs_on_an_explicit_attention_backend(transformer):
    install_gsa(transformer)
    refs, x, txt, sigma = references(2), targets(1), text(1, 1), torch.tensor([0.5])
    default = predict_with_references(transformer, x, sigma, txt, GRID, refs)
    transformer.set_attention_backend("native")
    assert has_gsa(transformer)
    assert torch.allclose(predict_with_references(transformer, x, sigma, txt, GRID, refs), default, atol=ATOL)
