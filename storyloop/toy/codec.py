"""The toy world's image codec: an exact pixel-unshuffle "VAE" behind AutoencoderKL's interface.

64 x 64 x 3 pixels <-> 16 x 16 x 48 latents (factor 4), which FLUX packing turns into 8 x 8 tokens
of 192 channels. Lossless, so generated frames are judged on exactly what the transformer made.
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
    def __init__(self, factor: int = 4, in_channels: int = 3, scaling_factor: float = 1.0, shift_factor: float = 0.0,
                 block_out_channels: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        # FluxPipeline derives its scale factor as 2 ** (len(block_out_channels) - 1); keep them in step.
        if 2 ** (len(block_out_channels) - 1) != factor:
            raise ValueError("block_out_channels must have log2(factor) + 1 entries")
        self.register_buffer("_anchor", torch.zeros(1), persistent=True)  # gives the module a dtype and device

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor ** 2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(x, self.config.factor)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.full_like(z, -30.0)], dim=1))  # ~zero variance
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.pixel_shuffle(z, self.config.factor)
        return DecoderOutput(sample=x) if return_dict else (x,)
