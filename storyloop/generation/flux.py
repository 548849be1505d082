"""One FLUX transformer call, with or without Group-Shared Attention, as training and sampling use it.

The transformer stays diffusers' own `FluxTransformer2DModel`; this module only builds its inputs:
packed latents, position ids, per-row timesteps (targets at t, references at 0) and the GSA context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from storyloop.generation.gsa import GSAContext, latent_image_ids, packed_cache, reference_rope, unwrapped


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] VAE latents -> [B, (H/2)*(W/2), C*4] tokens, as FluxPipeline packs them."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of pack_latents; `height`, `width` are the latent (not token) sizes."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


@dataclass
class TextEmbeds:
    """Encoded prompts, one row per image: T5 sequence [B, S, D] and CLIP pooled [B, P]."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def expand(self, n: int) -> TextEmbeds:
        """One prompt repeated for n rows."""
        return TextEmbeds(self.prompt_embeds.expand(n, -1, -1), self.pooled.expand(n, -1))

    def cat(self, other: TextEmbeds) -> TextEmbeds:
        return TextEmbeds(torch.cat([self.prompt_embeds, other.prompt_embeds]),
                          torch.cat([self.pooled, other.pooled]))


Grid = tuple[int, int]  # token grid (h, w)


@dataclass
class References:
    """Clean reference latents (slots 0..n-1, or groups of slots), with their (empty-prompt) text.

    References of one token grid: `tokens` is [n, L, C] and `grid` that (h, w). References of their
    own sizes: `tokens` is a list of n [L_i, C] and `grid` a list of n grids. `References.of` builds
    whichever fits, so references that happen to share a grid take the one-grid paths.
    """

    tokens: torch.Tensor | list[torch.Tensor]  # packed clean latents
    text: TextEmbeds  # n rows
    grid: Grid | list[Grid]

    @classmethod
    def of(cls, tokens: list[torch.Tensor], text: TextEmbeds, grids: list[Grid]) -> References:
        """From one [L_i, C] tensor and one grid per reference (at least one reference)."""
        grids = [tuple(g) for g in grids]
        if len(tokens) != len(grids) or not tokens:
            raise ValueError(f"{len(tokens)} reference tensors for {len(grids)} grids (need at least one each)")
        if len(set(grids)) == 1:
            return cls(torch.stack(list(tokens)), text, grids[0])
        return cls(list(tokens), text, grids)

    @property
    def count(self) -> int:
        return len(self.tokens)

    @property
    def uniform(self) -> bool:
        """Whether every reference has the one grid `grid`."""
        return isinstance(self.grid, tuple)

    @property
    def grids(self) -> list[Grid]:
        return [self.grid] * self.count if self.uniform else list(self.grid)

    def by_grid(self) -> list[tuple[Grid, list[int]]]:
        """(grid, reference rows with that grid), grids in order of first appearance."""
        rows: dict[Grid, list[int]] = {}
        for r, g in enumerate(self.grids):
            rows.setdefault(g, []).append(r)
        return list(rows.items())

    def rows(self, ids: list[int]) -> References:
        """The references `ids`, in that order."""
        pick = torch.tensor(ids, dtype=torch.long)
        text = TextEmbeds(self.text.prompt_embeds[pick.to(self.text.prompt_embeds.device)],
                          self.text.pooled[pick.to(self.text.pooled.device)])
        if self.uniform:
            return References(self.tokens[pick.to(self.tokens.device)], text, self.grid)
        return References.of([self.tokens[i] for i in ids], text, [self.grid[i] for i in ids])

    def to(self, device, dtype) -> References:
        text = TextEmbeds(self.text.prompt_embeds.to(device, dtype), self.text.pooled.to(device, dtype))
        if self.uniform:
            return References(self.tokens.to(device, dtype), text, self.grid)
        return References([t.to(device, dtype) for t in self.tokens], text, list(self.grid))


def _call(transformer: FluxTransformer2DModel, tokens, timestep, text: TextEmbeds, grid, guidance,
          gsa: GSAContext | None) -> torch.Tensor:
    h, w = grid
    model = unwrapped(transformer)
    dtype = model.dtype
    txt_ids = torch.zeros(text.prompt_embeds.shape[1], 3, device=tokens.device)
    guidance_t = None
    if model.config.guidance_embeds:
        guidance_t = torch.full((tokens.shape[0],), float(guidance), device=tokens.device, dtype=torch.float32)
    return transformer(
        hidden_states=tokens.to(dtype), timestep=timestep.to(tokens.device), guidance=guidance_t,
        encoder_hidden_states=text.prompt_embeds.to(dtype), pooled_projections=text.pooled.to(dtype),
        txt_ids=txt_ids, img_ids=latent_image_ids(h, w, device=tokens.device),
        joint_attention_kwargs={"gsa": gsa} if gsa is not None else None, return_dict=False)[0]


def _ref_index(num_targets: int, refs_per_target: int, device) -> torch.Tensor:
    return torch.arange(refs_per_target, device=device).expand(num_targets, refs_per_target)


def predict(transformer: FluxTransformer2DModel, tokens: torch.Tensor, sigma: torch.Tensor,
            text: TextEmbeds, grid: tuple[int, int], guidance: float = 3.5,
            cache: GSAContext | None = None, ref_index: torch.Tensor | list[list[int]] | None = None) -> torch.Tensor:
    """Velocity for targets `tokens` at noise level `sigma` ([B] or scalar, in [0, 1]).

    With `cache` (from `write_reference_cache`) every target reads all cached references, or the
    cache rows `ref_index[t]` (in slot order) when given: a [targets, n] tensor, or for a packed cache a list
    of row lists of any lengths (targets with one, two or three characters' references); without a cache
    this is a stock FLUX call.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=tokens.device).expand(tokens.shape[0])
    ctx = None
    if cache is not None:
        index = ref_index if ref_index is not None else _ref_index(
            tokens.shape[0], cache.ref_index.shape[1], tokens.device)
        ctx = cache.reading(text.prompt_embeds.shape[1], index)
    return _call(transformer, tokens, sigma, text, grid, guidance, ctx)


def write_reference_cache(transformer: FluxTransformer2DModel, refs: References,
                          guidance: float = 3.5) -> GSAContext:
    """Run the references alone at t = 0 once and keep every layer's reference image K/V.

    Call it under `torch.no_grad()` for sampling; with grad enabled the cache keeps its graph.
    """
    return write_grouped_reference_cache(transformer, refs, refs.count, guidance)


def write_grouped_reference_cache(transformer: FluxTransformer2DModel, refs: References,
                                  refs_per_group: int | Sequence[int], guidance: float = 3.5) -> GSAContext:
    """As `write_reference_cache` for several groups of references, in one pass.

    `refs_per_group = n`: every group has n references; reference row r is slot r % n of group r // n; read
    it back with `ref_index[t] = group * n + arange(n)`. A list of counts: group g has counts[g] references
    (a batch of scenarios with one, two or three characters), row r is slot r - first row of its group; the
    cache is then packed (see gsa.py) and read with a list of rows per target (`group_rows`).
    References of several grids are written in one forward per grid and packed (see gsa.py).
    """
    n = refs.count
    if isinstance(refs_per_group, int):
        per = max(refs_per_group, 1)
        if n % per:
            raise ValueError(f"{n} reference rows do not split into groups of {refs_per_group}")
        slot_of, num_slots, packed = [r % per for r in range(n)], refs_per_group, False
    else:
        counts = list(refs_per_group)
        if sum(counts) != n:
            raise ValueError(f"groups of {counts} references need {sum(counts)} reference rows, got {n}")
        slot_of = [slot for c in counts for slot in range(c)]
        num_slots, packed = max(counts, default=0), True
    parts = []
    for grid, rows in refs.by_grid() or [(refs.grid, [])]:
        part = refs if refs.uniform else refs.rows(rows)
        device = part.tokens.device if refs.uniform else part.tokens[0].device
        ctx = GSAContext("write", text_len=refs.text.prompt_embeds.shape[1],
                         ref_index=torch.arange(num_slots, device=device)[None],
                         ref_slots=torch.tensor([slot_of[r] for r in rows], dtype=torch.long, device=device),
                         ref_rope=reference_rope(transformer, *grid, num_slots, device=device))
        _call(transformer, part.tokens, torch.zeros(len(rows), device=device), part.text, grid, guidance, ctx)
        parts.append((ctx, rows))
    if len(parts) == 1 and not packed:
        return parts[0][0]
    return packed_cache(parts, n)


def group_rows(counts: Sequence[int]) -> list[list[int]]:
    """The cache rows of each group, for groups of `counts` references written one after another."""
    starts = [sum(counts[:g]) for g in range(len(counts))]
    return [list(range(start, start + c)) for start, c in zip(starts, counts)]


def predict_with_references(transformer: FluxTransformer2DModel, tokens: torch.Tensor, sigma: torch.Tensor,
                            text: TextEmbeds, grid: tuple[int, int], refs: References,
                            guidance: float = 3.5, refs_per_target: int | None = None) -> torch.Tensor:
    """Velocity for targets in one forward of [targets @ sigma, references @ 0] (the "batch" pass).

    By default every target attends to all of `refs`. With `refs_per_target = n`, `refs` holds one
    group of n references per target, in target order (Stage-1 batches of several stories).
    This is Stage-1 training's forward, and the uncached path for tests and benchmarks.

    One forward needs one token count: references whose grid is not the targets' are written first
    (one forward per grid, with the graph kept when grad is enabled, so gradients still reach both
    paths) and then read, which gives the same velocities.
    """
    t, device = tokens.shape[0], tokens.device
    if refs_per_target is None:
        n, index = refs.count, _ref_index(t, refs.count, device)
    else:
        n = refs_per_target
        if refs.count != t * n:
            raise ValueError(f"{t} targets x {n} references need {t * n} reference rows, got {refs.count}")
        index = torch.arange(t * n, device=device).view(t, n)
    if not (refs.uniform and tuple(refs.grid) == tuple(grid)):  # references of other sizes: write, then read
        cache = write_grouped_reference_cache(transformer, refs, n, guidance)
        return predict(transformer, tokens, sigma, text, grid, guidance, cache, index)
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device).expand(t)
    ctx = GSAContext("batch", text_len=text.prompt_embeds.shape[1], ref_index=index,
                     ref_slots=torch.arange(n, device=device).repeat(refs.count // max(n, 1)),
                     ref_rope=reference_rope(transformer, *grid, n, device=device), num_targets=t)
    out = _call(transformer, torch.cat([tokens, refs.tokens.to(tokens.dtype)]),
                torch.cat([sigma, torch.zeros(refs.count, device=device)]), text.cat(refs.text), grid, guidance, ctx)
    return out[:t]
