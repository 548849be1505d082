"""GSA with references of their own token grids: exact against GSA written out by hand (float32, CPU)."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from peft import LoraConfig

from storyloop.generation.flux import References, TextEmbeds, predict, predict_with_references, \
    write_grouped_reference_cache, write_reference_cache
from storyloop.generation.gsa import install_gsa, reference_image_ids, remove_gsa
from storyloop.generation.sampling import sample
from tests.generation.conftest import TEXT_LEN, TINY, text

ATOL = 1e-5
C = TINY["in_channels"]


def tokens(grid, n=1, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, grid[0] * grid[1], C, generator=g)


def mixed(grids, seed=40) -> References:
    """One reference per grid, with its own (random) text row."""
    return References.of([tokens(g, seed=seed + i)[0] for i, g in enumerate(grids)], text(len(grids), seed), grids)


def row_text(t: TextEmbeds, i: int) -> TextEmbeds:
    return TextEmbeds(t.prompt_embeds[i:i + 1], t.pooled[i:i + 1])


# -- GSA written out: stock forwards, diffusers' own RoPE, SDPA over explicit concatenations ------------

def stock_reference_kv(transformer, refs: References) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per reference, per layer: its image keys (rotated to its slot) and values, from a stock t = 0 forward
    of that reference alone."""
    remove_gsa(transformer)
    out = []
    for slot, grid in enumerate(refs.grids):
        seen, hooks = {}, []
        for name, m in transformer.named_modules():
            if name.endswith(".attn"):
                hooks.append(m.norm_k.register_forward_hook(lambda mod, i, o, n=name: seen.setdefault((n, "k"), o)))
                hooks.append(m.to_v.register_forward_hook(lambda mod, i, o, n=name: seen.setdefault((n, "v"), o)))
        predict(transformer, refs.rows([slot]).tokens.reshape(1, -1, C), torch.zeros(1), row_text(refs.text, slot),
                grid)
        for h in hooks:
            h.remove()
        cos, sin = transformer.pos_embed(reference_image_ids(*grid, slot))
        kv = {}
        for name, m in transformer.named_modules():
            if name.endswith(".attn"):
                k, v = seen[(name, "k")], seen[(name, "v")].unflatten(-1, (m.heads, -1))
                skip = TEXT_LEN if "single_transformer_blocks" in name else 0  # single blocks: [text, image]
                kv[name] = (apply_rotary_emb(k[:, skip:], (cos, sin), sequence_dim=1), v[:, skip:])
        out.append(kv)
    return out


class ExplicitGSA:
    """FLUX attention for one target whose keys/values are extended with given reference K/V."""

    def __init__(self, ref_kv):
        self.ref_kv = ref_kv  # (k, v) [1, tokens, heads, dim]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        heads = (attn.heads, -1)
        q = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, heads))
        k = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, heads))
        v = attn.to_v(hidden_states).unflatten(-1, heads)
        if encoder_hidden_states is not None:
            eq = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, heads))
            ek = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, heads))
            ev = attn.add_v_proj(encoder_hidden_states).unflatten(-1, heads)
            q, k, v = torch.cat([eq, q], 1), torch.cat([ek, k], 1), torch.cat([ev, v], 1)
        q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
        k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        k, v = torch.cat([k, self.ref_kv[0]], 1), torch.cat([v, self.ref_kv[1]], 1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2)
        if encoder_hidden_states is None:
            return out
        enc, img = out.split([encoder_hidden_states.shape[1], hidden_states.shape[1]], dim=1)
        return attn.to_out[1](attn.to_out[0](img)), attn.to_add_out(enc)


def explicit_gsa(transformer, x, sigma, txt, grid, refs: References) -> torch.Tensor:
    """Each target alone, attending to all of `refs` (slot i = reference i), with nothing of storyloop's GSA."""
    per_ref = stock_reference_kv(transformer, refs)
    outs = []
    for t in range(x.shape[0]):
        procs = {}
        for name in transformer.attn_processors:
            layer = name.removesuffix(".processor")
            procs[name] = ExplicitGSA(tuple(torch.cat([kv[layer][i] for kv in per_ref], 1) for i in (0, 1)))
        transformer.set_attn_processor(procs)
        outs.append(predict(transformer, x[t:t + 1], sigma[t:t + 1], row_text(txt, t), grid))
    transformer.set_attn_processor(FluxAttnProcessor())
    return torch.cat(outs)


# -- tests ---------------------------------------------------------------------------------------------

def test_references_of_one_grid_stay_one_tensor():
    same = References.of([tokens((2, 3))[0], tokens((2, 3), seed=1)[0]], text(2, 1), [(2, 3), [2, 3]])
    assert same.uniform and same.tokens.shape == (2, 6, C) and same.grid == (2, 3)
    both = mixed([(2, 3), (3, 2), (2, 3)])
    assert not both.uniform and both.grids == [(2, 3), (3, 2), (2, 3)]
    assert both.by_grid() == [((2, 3), [0, 2]), ((3, 2), [1])]
    picked = both.rows([2, 0])
    assert picked.uniform and torch.equal(picked.tokens[0], both.tokens[2])
    assert torch.equal(picked.text.pooled[0], both.text.pooled[2])


def test_cached_mixed_grids_equal_gsa_written_out(transformer):
    """A non-square target reading a square and a non-square reference: the same velocity as stock forwards,
    diffusers' RoPE and plain SDPA give."""
    refs = mixed([(4, 4), (3, 5)])
    x, txt, sigma, grid = tokens((2, 8), n=2, seed=5), text(2, 1), torch.tensor([0.3, 0.8]), (2, 8)
    expected = explicit_gsa(transformer, x, sigma, txt, grid, refs)
    install_gsa(transformer)
    with torch.no_grad():
        cache = write_reference_cache(transformer, refs)
    assert cache.ref_lengths == [16, 15]
    cached = predict(transformer, x, sigma, txt, grid, cache=cache)
    assert torch.allclose(cached, expected, atol=ATOL)
    uncached = predict_with_references(transformer, x, sigma, txt, grid, refs)  # write + read in one call
    assert torch.allclose(uncached, expected, atol=ATOL)
    alone = predict(transformer, x, sigma, txt, grid)
    assert (cached - alone).abs().max() > 1e-3  # the references matter


def test_one_grid_references_at_another_size_than_the_target_equal_gsa_written_out(transformer):
    refs = References.of([tokens((3, 5), seed=8)[0], tokens((3, 5), seed=9)[0]], text(2, 4), [(3, 5)] * 2)
    x, txt, sigma, grid = tokens((4, 4), n=1, seed=6), text(1, 2), torch.tensor([0.6]), (4, 4)
    expected = explicit_gsa(transformer, x, sigma, txt, grid, refs)
    install_gsa(transformer)
    assert torch.allclose(predict_with_references(transformer, x, sigma, txt, grid, refs), expected, atol=ATOL)


def test_a_reference_read_among_other_grids_has_the_kv_it_has_written_alone(transformer):
    """Reference B of grid (2, 6) in slot 1 next to a (4, 4) reference: the K/V a (3, 5) target reads for it
    are those of B written with references of its own grid only."""
    install_gsa(transformer)
    a, b, other = tokens((4, 4), seed=1)[0], tokens((2, 6), seed=2)[0], tokens((2, 6), seed=3)[0]
    txt = text(2, 9)
    with torch.no_grad():
        packed = write_reference_cache(transformer, References.of([a, b], txt, [(4, 4), (2, 6)]))
        alone = write_reference_cache(transformer, References.of([other, b], txt, [(2, 6), (2, 6)]))
    assert packed.reading(TEXT_LEN).token_index("cpu") == slice(None)  # both rows, in order: the whole cache
    index = packed.reading(TEXT_LEN, torch.tensor([[1]])).token_index("cpu")  # a target reading B alone
    assert torch.equal(index, torch.arange(16, 16 + 12))
    for layer, (k, v) in alone.cache.items():
        pk, pv = packed.cache[layer]
        assert torch.allclose(pk[index], k[1], atol=ATOL, rtol=1e-5)
        assert torch.allclose(pv[index], v[1], atol=ATOL, rtol=1e-5)
    # and targets of a (3, 5) grid reading B only get what they get from B's own-grid cache
    x, sigma, only_b = tokens((3, 5), n=2, seed=4), torch.tensor([0.2, 0.6]), torch.tensor([[1], [1]])
    read_packed = predict(transformer, x, sigma, text(2, 1), (3, 5), cache=packed, ref_index=only_b)
    read_alone = predict(transformer, x, sigma, text(2, 1), (3, 5), cache=alone, ref_index=only_b)
    assert torch.allclose(read_packed, read_alone, atol=ATOL)


@pytest.mark.parametrize("grids, calls", [([(4, 4), (3, 5), (2, 6), (2, 6)], "one per target"),
                                          ([(4, 4), (3, 5), (3, 5), (4, 4)], "one")])
def test_targets_reading_their_own_references_equal_each_target_alone(transformer, grids, calls):
    """Two stories in one batch, each target with its own two references. Target 0 reads (4, 4) + (3, 5); target
    1 reads two (2, 6) references (other lengths: one attention call per target) or (3, 5) + (4, 4) (as many
    tokens: one gather, one call)."""
    install_gsa(transformer)
    refs = mixed(grids)
    x, txt, sigma, grid = tokens((4, 4), n=2, seed=5), text(2, 1), torch.tensor([0.4, 0.7]), (4, 4)
    with torch.no_grad():
        cache = write_grouped_reference_cache(transformer, refs, 2)
    index = torch.tensor([[0, 1], [2, 3]])
    token_index = cache.reading(TEXT_LEN, index).token_index("cpu")
    assert isinstance(token_index, list) if calls == "one per target" else token_index.shape == (2, 31)
    both = predict(transformer, x, sigma, txt, grid, cache=cache, ref_index=index)
    grouped = predict_with_references(transformer, x, sigma, txt, grid, refs, refs_per_target=2)
    for t in range(2):
        own = refs.rows([2 * t, 2 * t + 1])
        with torch.no_grad():
            alone = predict(transformer, x[t:t + 1], sigma[t:t + 1], row_text(txt, t), grid,
                            cache=write_reference_cache(transformer, own))
        assert torch.allclose(both[t:t + 1], alone, atol=ATOL)
        assert torch.allclose(grouped[t:t + 1], alone, atol=ATOL)


@pytest.mark.parametrize("grids", [[(4, 4)] * 4, [(4, 4), (3, 5), (2, 6), (3, 5)]])
def test_targets_reading_different_numbers_of_references_equal_each_target_alone(transformer, grids):
    """Three frames in one batch with one, none and three characters' references (one grid, or several): each
    reads its own rows of one packed cache, in its own slots, and gets what it gets alone."""
    from storyloop.generation.flux import group_rows

    install_gsa(transformer)
    refs, counts = mixed(grids), [1, 0, 3]
    x, txt, sigma, grid = tokens((4, 4), n=3, seed=6), text(3, 1), torch.tensor([0.4, 0.7, 0.2]), (4, 4)
    with torch.no_grad():
        cache = write_grouped_reference_cache(transformer, refs, counts)
    assert cache.ref_lengths is not None and group_rows(counts) == [[0], [], [1, 2, 3]]
    together = predict(transformer, x, sigma, txt, grid, cache=cache, ref_index=group_rows(counts))
    for t, rows in enumerate(group_rows(counts)):
        with torch.no_grad():
            own = write_reference_cache(transformer, refs.rows(rows)) if rows else None
            alone = predict(transformer, x[t:t + 1], sigma[t:t + 1], row_text(txt, t), grid, cache=own)
        assert torch.allclose(together[t:t + 1], alone, atol=ATOL)
    with pytest.raises(ValueError, match=r"groups of \[1, 0, 2\] references need 3 reference rows, got 4"):
        write_grouped_reference_cache(transformer, refs, [1, 0, 2])


def test_cached_mixed_refs_equal_uncached_over_full_loop(transformer, scheduler):
    install_gsa(transformer)
    kw = dict(text=text(2, 1), grid=(2, 8), seeds=[11, 12], refs=mixed([(4, 4), (2, 6)]), num_inference_steps=6)
    cached = sample(transformer, scheduler, use_cache=True, **kw)
    uncached = sample(transformer, scheduler, use_cache=False, **kw)
    assert cached.shape == (2, 16, C) and (cached - uncached).abs().max() < 1e-4


def mixed_grads(transformer, ref_tokens, refs):
    transformer.zero_grad()
    grid_refs = References(list(ref_tokens), refs.text, refs.grid)
    out = predict_with_references(transformer, tokens((4, 4), seed=3), torch.tensor([0.5]), text(1, 1), (4, 4),
                                  grid_refs)
    out.pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in transformer.named_parameters() if p.grad is not None}


def test_lora_gradients_reach_target_and_reference_paths_with_mixed_grids(transformer):
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v", "add_k_proj"]))
    install_gsa(transformer)
    refs = mixed([(4, 4), (2, 6)])
    ref_tokens = [t.clone().requires_grad_(True) for t in refs.tokens]
    grads = mixed_grads(transformer, ref_tokens, refs)
    assert all(t.grad is not None and t.grad.abs().max() > 0 for t in ref_tokens)  # both reference writes
    lora = {n: g for n, g in grads.items() if "lora_" in n}
    assert lora and any(g.abs().max() > 0 for n, g in lora.items() if "single_transformer_blocks" in n)

    transformer.enable_gradient_checkpointing()  # recomputed writes keep the gradients
    transformer.train()
    checkpointed = mixed_grads(transformer, [t.detach().clone().requires_grad_(True) for t in refs.tokens], refs)
    assert grads.keys() == checkpointed.keys()
    assert all(torch.allclose(grads[k], checkpointed[k], atol=1e-5) for k in grads)
