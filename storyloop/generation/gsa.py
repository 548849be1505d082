"""Group-Shared Attention (paper eqs. 3-5) as an attention processor for diffusers' FLUX transformer.

A target's keys and values are extended with the *image* tokens of its references; references are
clean (t = 0) and attend only to themselves, exactly as in a stock FLUX forward. Two consequences:

* With zero references, GSA is stock FLUX attention.
* A reference's K/V never depend on the target or on the denoising step, so they can be computed
  once per scenario ("write" pass over the references alone) and read at every step ("read" pass
  over the targets alone). One forward of [targets, references] together ("batch" pass) gives the
  same result; training uses it so gradients reach both paths.

Reference position ids. A reference's own self-attention uses the ordinary image ids (so the
reference pass is exactly a stock t = 0 forward). The keys a target reads are rotated with the ids
of reference slot i instead: first axis = 1 + i, as FLUX Kontext marks its conditioning image with
axis 0 = 1, generalised to one offset per reference so the target can tell references apart and
they never collide with its own tokens (axis 0 = 0). Training, DPO and generation all build the
context here, so the scheme has one definition.

References of their own sizes. Each reference row has its own token grid (h, w): slot i's keys are
rotated with first axis 1 + i and that grid's own row/column ids. A forward needs one token count
for all its rows, so references are written one forward per distinct grid; the cache then packs
every row's image K/V one after another ([tokens of all rows, heads, dim], `ref_lengths` saying how
many tokens each row has) instead of [rows, tokens, heads, dim]. A target reads the concatenation of
its references' rows: one batched attention call when every target of the forward reads as many
reference tokens (always in generation: the K candidates of a scenario share its references), else
one call per target. References of one grid keep the [rows, tokens, heads, dim] cache and its reads.

The context travels through `joint_attention_kwargs={"gsa": ctx}`; diffusers forwards a kwarg to a
processor only if its `__call__` names it, which this one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from accelerate.utils import extract_model_from_parallel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import (FluxAttnProcessor, FluxTransformer2DModel,
                                                            _get_qkv_projections)

from storyloop.generation.reference_gain import reference_logit_bias, reference_mask

POSITION_SCHEME = "axis0-offset-1+i"  # recorded in LoRA metadata; loaders refuse another scheme
REFERENCE_PROMPT = ""  # references are encoded with an empty prompt, in training and inference alike

Mode = Literal["batch", "write", "read"]


def unwrapped(transformer) -> FluxTransformer2DModel:
    """The FLUX model inside an accelerate/DDP wrapper, for reading its attributes.

    Forwards still go through the wrapper (it synchronises gradients across processes), but a
    DistributedDataParallel has no `.config`, `.dtype` or `.pos_embed` of its own.
    """
    return extract_model_from_parallel(transformer, keep_fp32_wrapper=True)


def latent_image_ids(height: int, width: int, first_axis: float = 0.0, device=None) -> torch.Tensor:
    """FLUX image position ids (h*w, 3) for a packed latent grid of `height` x `width` tokens."""
    ids = torch.zeros(height, width, 3, device=device)
    ids[..., 0] = first_axis
    ids[..., 1] = torch.arange(height, device=device)[:, None]
    ids[..., 2] = torch.arange(width, device=device)[None, :]
    return ids.reshape(height * width, 3)


def reference_image_ids(height: int, width: int, slot: int, device=None) -> torch.Tensor:
    """Position ids a target sees for reference number `slot` (0-based)."""
    return latent_image_ids(height, width, first_axis=1.0 + slot, device=device)


@dataclass
class GSAContext:
    """What the GSA processors need for one transformer forward.

    mode "batch": rows are [targets, references]; `num_targets` says where references start.
    mode "write": rows are references only; their image K/V are stored in `cache`.
    mode "read":  rows are targets only; they read references from `cache`.

    `ref_index[t]` lists the reference rows (batch: 0 = first reference row; read: cache rows) that
    target t attends to, in slot order: a [targets, n] tensor, or (reading a packed cache) a list of row
    lists whose lengths may differ between targets. `ref_slots[r]` is reference row r's slot, which selects the
    rotary table in `ref_rope` (cos, sin of shape [slots, tokens, head_dim]).

    `ref_lengths` is None when every cache row has one grid (the cache holds [rows, tokens, H, D] per
    layer); else the token count of each row, and the cache holds the rows packed ([sum, H, D]).
    """

    mode: Mode
    text_len: int
    ref_index: torch.Tensor | list[list[int]]  # long [targets, refs per target], or rows per target
    ref_slots: torch.Tensor | None = None  # long [reference rows]; batch and write modes
    ref_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # batch and write modes
    num_targets: int = 0
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    ref_lengths: list[int] | None = None
    _token_index: torch.Tensor | list[torch.Tensor] | None = field(default=None, repr=False)

    def reading(self, text_len: int, ref_index: torch.Tensor | None = None) -> GSAContext:
        """A read context over this (written) cache for a forward of targets only."""
        index = self.ref_index if ref_index is None else ref_index
        return GSAContext("read", text_len, index, cache=self.cache, ref_lengths=self.ref_lengths)

    def token_index(self, device) -> slice | torch.Tensor | list[torch.Tensor]:
        """For a packed cache: the packed token positions the targets read, in slot order.

        Every target reads the same rows (generation): one [tokens] index, or `slice(None)` when that is
        the whole cache in order. Every target reads as many tokens: a [targets, tokens] index (one
        gather, one batched attention call). Else one [tokens] index per target. Built once per context.
        """
        if self._token_index is None:
            starts = [0]
            for n in self.ref_lengths:
                starts.append(starts[-1] + n)
            rows = self.ref_index.tolist() if isinstance(self.ref_index, torch.Tensor) else \
                [list(r) for r in self.ref_index]
            if rows and all(r == rows[0] for r in rows) and rows[0] == list(range(len(self.ref_lengths))):
                self._token_index = slice(None)
                return self._token_index
            per_target = [torch.cat([torch.arange(starts[r], starts[r + 1], device=device) for r in row]
                                    or [torch.zeros(0, dtype=torch.long, device=device)]) for row in rows]
            if rows and all(r == rows[0] for r in rows):
                self._token_index = per_target[0]
            elif len({len(t) for t in per_target}) == 1:
                self._token_index = torch.stack(per_target)
            else:
                self._token_index = per_target
        return self._token_index


def packed_cache(parts: list[tuple[GSAContext, list[int]]], num_rows: int) -> GSAContext:
    """One write context from several (one per grid): `parts` pairs a written context with the global
    row number of each of its rows. Every layer's K/V become the rows' image tokens packed in row order."""
    where: list[tuple[GSAContext, int]] = [None] * num_rows  # global row -> (context, its local row)
    for ctx, rows in parts:
        for local, row in enumerate(rows):
            where[row] = (ctx, local)
    first = parts[0][0]
    packed = {layer: tuple(torch.cat([ctx.cache[layer][i][local] for ctx, local in where]) for i in (0, 1))
              for layer in first.cache}
    layer = next(iter(first.cache))
    lengths = [ctx.cache[layer][0].shape[1] for ctx, _ in where]
    return GSAContext("write", first.text_len, first.ref_index, cache=packed, ref_lengths=lengths)


def reference_rope(transformer: FluxTransformer2DModel, height: int, width: int, num_slots: int,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables (cos, sin), each [num_slots, height*width, head_dim], for reference slots."""
    ids = torch.cat([reference_image_ids(height, width, s, device) for s in range(num_slots)]
                    or [torch.zeros(0, 3, device=device)])
    model = unwrapped(transformer)
    cos, sin = model.pos_embed(ids)
    dim = sum(model.config.axes_dims_rope)
    return cos.view(num_slots, height * width, dim), sin.view(num_slots, height * width, dim)


def _rotate_rows(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE with a table per row: x [rows, tokens, heads, dim], cos/sin [rows, tokens, dim].

    Same arithmetic as diffusers' apply_rotary_emb (interleaved pairs, float32 products).
    """
    cos, sin = cos[:, :, None, :].to(x.device), sin[:, :, None, :].to(x.device)
    real, imag = x.unflatten(-1, (x.shape[-1] // 2, 2)).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def _gather_refs(ref: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[refs, tokens, H, D] indexed by [targets, n] -> [targets, n*tokens, H, D]."""
    picked = ref[index.to(ref.device)]
    return picked.flatten(1, 2)


class GSAAttnProcessor(FluxAttnProcessor):
    """FluxAttnProcessor plus Group-Shared Attention when a `gsa` context is given."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None, gsa: GSAContext | None = None):
        if gsa is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise ValueError("GSA does not take an attention mask (it keeps flash backends usable)")

        query, key, value, enc_q, enc_k, enc_v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:  # double-stream block: text arrives separately
            enc_q = attn.norm_added_q(enc_q.unflatten(-1, (-1, attn.head_dim)))
            enc_k = attn.norm_added_k(enc_k.unflatten(-1, (-1, attn.head_dim)))
            enc_v = enc_v.unflatten(-1, (-1, attn.head_dim))
            text_len = enc_q.shape[1]
            query, key, value = (torch.cat(p, dim=1) for p in ((enc_q, query), (enc_k, key), (enc_v, value)))
        else:  # single-stream block: [text, image] already concatenated
            text_len = gsa.text_len

        # Reference image keys as targets see them: rotated to the reference's slot positions.
        def reference_kv(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
            cos, sin = gsa.ref_rope
            slots = gsa.ref_slots.to(cos.device)
            k_img = key[rows, text_len:]
            return _rotate_rows(k_img, cos[slots], sin[slots]), value[rows, text_len:]

        if gsa.mode == "write":
            gsa.cache[self.layer] = reference_kv(slice(None))
        elif gsa.mode == "batch":
            ref_k, ref_v = reference_kv(slice(gsa.num_targets, None))

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        def attend(q, k, v, mask=None):
            return dispatch_attention_fn(q, k, v, attn_mask=mask, backend=self._attention_backend,
                                         parallel_config=self._parallel_config)

        def attend_targets(q, k, v, ref_k, ref_v):  # targets over [their own keys, their references' keys]
            k_t, v_t = torch.cat([k, ref_k], dim=1), torch.cat([v, ref_v], dim=1)
            bias = reference_logit_bias(attn)  # None unless a reference gain is attached
            return attend(q, k_t, v_t, None if bias is None else reference_mask(bias, q, k_t))

        if gsa.mode == "write":
            out = attend(query, key, value)
        else:
            if gsa.mode == "read":
                ref_k, ref_v = gsa.cache[self.layer]
            n = gsa.num_targets if gsa.mode == "batch" else query.shape[0]
            if gsa.ref_lengths is None:  # references of one grid: [rows, tokens, H, D]
                out = attend_targets(query[:n], key[:n], value[:n], _gather_refs(ref_k, gsa.ref_index),
                                     _gather_refs(ref_v, gsa.ref_index))
            else:  # packed rows of several grids
                index = gsa.token_index(ref_k.device)
                if isinstance(index, list):  # reference lengths differ between targets: one call each
                    out = torch.cat([attend_targets(query[t:t + 1], key[t:t + 1], value[t:t + 1],
                                                    ref_k[i][None], ref_v[i][None]) for t, i in enumerate(index)])
                elif isinstance(index, slice) or index.dim() == 1:  # the same references for every target
                    shared = [r[index][None].expand(n, -1, -1, -1) for r in (ref_k, ref_v)]
                    out = attend_targets(query, key, value, *shared)
                else:  # as many reference tokens for every target: one gather, one call
                    out = attend_targets(query, key, value, ref_k[index], ref_v[index])
            if gsa.mode == "batch" and n < query.shape[0]:  # references attend only to themselves
                out = torch.cat([out, attend(query[n:], key[n:], value[n:])], dim=0)

        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        enc_out, out = out.split_with_sizes([text_len, out.shape[1] - text_len], dim=1)
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(enc_out.contiguous())


def install_gsa(transformer: FluxTransformer2DModel) -> None:
    """Put a GSA processor on every attention layer (double- and single-stream blocks)."""
    processors = {}
    for name in transformer.attn_processors:
        processors[name] = GSAAttnProcessor(layer=name.removesuffix(".processor"))
    transformer.set_attn_processor(processors)


def remove_gsa(transformer: FluxTransformer2DModel) -> None:
    """Back to diffusers' stock FLUX processors."""
    transformer.set_attn_processor(FluxAttnProcessor())


def has_gsa(transformer: FluxTransformer2DModel) -> bool:
    return all(isinstance(p, GSAAttnProcessor) for p in transformer.attn_processors.values())
