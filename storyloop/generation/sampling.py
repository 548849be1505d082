"""The Euler flow-matching sampler, read top to bottom like the paper's algorithm.

noise -> (references encoded once, their K/V cached) -> loop over sigmas -> clean latent tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from storyloop.generation.flux import (References, TextEmbeds, predict, predict_with_references,
                                       write_reference_cache)
from storyloop.generation.gsa import GSAContext, unwrapped


Seed = int | torch.Generator | None  # what one target's noise is drawn from


def initial_noise(seeds: Sequence[Seed], num_tokens: int, channels: int) -> torch.Tensor:
    """One noise tensor per seed, drawn on the CPU so a seed gives the same image on any device.

    A torch.Generator instead of a seed is drawn from as it stands (on its own device), so
    `torch.Generator().manual_seed(s)` gives exactly seed s's noise; None draws from torch's global generator.
    """
    return torch.cat([_draw((1, num_tokens, channels), s) for s in seeds])


def _draw(shape: tuple[int, ...], seed: Seed) -> torch.Tensor:
    if isinstance(seed, torch.Generator):
        return torch.randn(shape, generator=seed, device=seed.device).cpu()
    if seed is None:
        return torch.randn(shape)
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


def shift_mu(scheduler: FlowMatchEulerDiscreteScheduler, num_tokens: int) -> float | None:
    """FLUX's resolution-dependent shift (linear in the token count between base and max)."""
    cfg = scheduler.config
    if not cfg.get("use_dynamic_shifting", False):
        return None
    slope = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    return cfg.base_shift + slope * (num_tokens - cfg.base_image_seq_len)


@torch.no_grad()
def sample(transformer: FluxTransformer2DModel, scheduler: FlowMatchEulerDiscreteScheduler,
           text: TextEmbeds, grid: tuple[int, int], seeds: Sequence[Seed], refs: References | None = None,
           num_inference_steps: int = 50, guidance_scale: float = 3.5, use_cache: bool = True,
           reference_cache: GSAContext | None = None, reference_guidance_scale: float = 1.0,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Denoise one target per seed (text has one row per seed; a seed may be a torch.Generator, see
    `initial_noise`). Returns packed clean latent tokens.

    With references and `use_cache`, their K/V are written once before the loop, or taken from
    `reference_cache` (from `write_reference_cache`) so several calls can share one write.

    `reference_guidance_scale` s != 1 is classifier-free guidance over the references: each step also
    predicts without them and moves to `v_without + s * (v_with - v_without)`, at twice the cost. 1 is
    the paper's sampler (one prediction, with references); 0 is sampling without them (one prediction).
    """
    if reference_guidance_scale == 0.0:  # exactly the sampler without references: skip their unused prediction
        refs = reference_cache = None
    device = next(transformer.parameters()).device
    num_tokens = grid[0] * grid[1]
    latents = initial_noise(seeds, num_tokens, unwrapped(transformer).config.in_channels).to(device)

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)  # fresh step counter
    sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
    scheduler.set_timesteps(sigmas=sigmas, mu=shift_mu(scheduler, num_tokens), device=device)
    scheduler.set_begin_index(0)

    cache = None
    if refs is not None and use_cache:
        cache = reference_cache or write_reference_cache(transformer, refs, guidance_scale)
    for i, t in enumerate(scheduler.timesteps):
        sigma = t / 1000
        if refs is not None and not use_cache:
            velocity = predict_with_references(transformer, latents, sigma, text, grid, refs, guidance_scale)
        else:
            velocity = predict(transformer, latents, sigma, text, grid, guidance_scale, cache)
        if refs is not None and reference_guidance_scale != 1.0:
            without = predict(transformer, latents, sigma, text, grid, guidance_scale)
            velocity = without + reference_guidance_scale * (velocity - without)
        latents = scheduler.step(velocity.float(), t, latents).prev_sample
        if on_step is not None:
            on_step(i)
    return latents
