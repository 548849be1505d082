import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from storyloop.generation.flux import References, TextEmbeds

TINY = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
GRID = (4, 4)  # 16 image tokens
TEXT_LEN = 6


def tiny_transformer(seed: int = 0) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**TINY).eval()
    # diffusers zero-initialises some output layers; randomise everything so no path is trivially zero.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def text(n: int, seed: int) -> TextEmbeds:
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(n, TEXT_LEN, TINY["joint_attention_dim"], generator=g),
                      torch.randn(n, TINY["pooled_projection_dim"], generator=g))


def references(n: int, seed: int = 7) -> References:
    g = torch.Generator().manual_seed(seed)
    return References(torch.randn(n, GRID[0] * GRID[1], TINY["in_channels"], generator=g), text(n, seed + 1), GRID)


def targets(n: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, GRID[0] * GRID[1], TINY["in_channels"], generator=g)


@pytest.fixture
def transformer():
    return tiny_transformer()


@pytest.fixture
def scheduler():
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)
