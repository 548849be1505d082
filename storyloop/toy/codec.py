"""The toy world's image codec: pooling plus pixel-unshuffle, behind AutoencoderKL's interface.

64 x 64 x 3 pixels -> 2x2 average pool -> pixel-unshuffle by 2 -> 16 x 16 x 12 latents, which FLUX
packing turns into 8 x 8 tokens of 48 channels; decoding reverses it (pixel-shuffle, then nearest
upsampling). It loses only detail finer than 2 px, needs no training, and keeps the transformer's
output (48 numbers a token) small enough for a CPU-trained model to draw cleanly; with 192 numbers
a token (no pooling) the same budget left visible noise in every frame.
It answers what FluxPipeline and storyloop ask of a VAE: `encode(x).latent_dist.mode()`,
`decode(z).sample`, `config.scaling_factor / shift_factor / block_out_channels`, dtype and device;
and it saves and loads with the pipeline (model_index.json names this module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin


class PixelUnshuffleCodec(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, pool: int = 2, factor: int = 2, in_channels: int = 3, scaling_factor: float = 1.0,
                 shift_factor: float = 0.0, block_out_channels: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        # FluxPipeline derives its scale factor as 2 ** (len(block_out_channels) - 1); keep them in step.
        if 2 ** (len(block_out_channels) - 1) != pool * factor:
            raise ValueError("block_out_channels must have log2(pool * factor) + 1 entries")
        self.register_buffer("_anchor", torch.zeros(1), persistent=True)  # gives the module a dtype and device

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor ** 2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(F.avg_pool2d(x, self.config.pool), self.config.factor)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.full_like(z, -30.0)], dim=1))  # ~zero variance
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.interpolate(F.pixel_shuffle(z, self.config.factor), scale_factor=self.config.pool, mode="nearest")
        return DecoderOutput(sample=x) if return_dict else (x,)
