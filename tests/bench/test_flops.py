"""The FLOP count behind the GPU check's MFU equals what torch counts when diffusers' FLUX runs with GSA.

torch's FlopCounterMode counts every matmul and attention call of the real forward on the meta device. The
mid config (3 double + 6 single blocks) has every part FLUX.1-dev has and counts in a second; FLUX.1-dev's
own figures are checked by hand below."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from storyloop.bench import flops as F
from storyloop.bench.gsa import CONFIGS
from storyloop.bench.random_flux import build_transformer
from storyloop.generation.flux import References, TextEmbeds, predict, predict_with_references, write_reference_cache
from storyloop.generation.gsa import install_gsa
from storyloop.generation.memory_estimate import FLUX1_DEV_TRANSFORMER as FLUX1_DEV

MID = CONFIGS["mid"]["transformer"]
TEXT = 512


@pytest.fixture(scope="module")
def mid():
    """On the meta device: the shapes and the ops torch dispatches, no memory."""
    model = build_transformer(MID, "meta", torch.bfloat16)
    install_gsa(model)
    return model


def counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def meta(*shape):
    return torch.zeros(*shape, device="meta")


def text(n):
    return TextEmbeds(meta(n, TEXT, MID["joint_attention_dim"]), meta(n, MID["pooled_projection_dim"]))


def test_forward_count_equals_torchs_for_plain_cached_and_batch_gsa_passes(mid):
    grid = (12, 20)
    image = grid[0] * grid[1]
    refs = References(meta(2, image, 64), text(2), grid)
    sigma = torch.tensor([0.5, 0.3], device="meta")
    assert counted(lambda: predict(mid, meta(1, image, 64), sigma[:1], text(1), grid)) \
        == F.forward(MID, 1, TEXT, image).total
    with torch.no_grad():
        cache = write_reference_cache(mid, refs)
    assert counted(lambda: write_reference_cache(mid, refs)) == F.forward(MID, 2, TEXT, image).total
    assert counted(lambda: predict(mid, meta(2, image, 64), sigma, text(2), grid, cache=cache)) \
        == F.forward(MID, 2, TEXT, image, extra_keys=2 * image).total
    # Stage-1's forward: [target @ t, references @ 0] in one batch
    assert counted(lambda: predict_with_references(mid, meta(1, image, 64), sigma[:1], text(1), grid, refs)) \
        == (F.forward(MID, 1, TEXT, image, 2 * image) + F.forward(MID, 2, TEXT, image)).total


def test_flux1_dev_row_at_1024_by_hand():
    d, blocks, seq = 3072, 57, 512 + 4096
    per_token = blocks * 12 * d * d  # q, k, v, out and MLP (double) or q, k, v, proj_mlp, proj_out (single)
    embed = 4096 * 64 * d + 4096 * d * 64 + 512 * 4096 * d  # x_embedder, proj_out, context_embedder
    per_row = 19 * 12 * d * d + 38 * 3 * d * d + 2 * d * d + 2 * (256 * d + d * d) + 768 * d + d * d
    f = F.forward(FLUX1_DEV, 1, 512, 4096)
    assert f.linear == 2 * (seq * per_token + embed + per_row)
    assert f.attention == 2 * blocks * 2 * seq * seq * d
    assert round(f.total / 1e12, 1) == 74.4


def test_training_counts_input_gradients_only_and_steps_compose_their_passes():
    row = F.forward(FLUX1_DEV, 1, TEXT, 1024)
    assert row.trained() == F.Flops(2 * row.linear, 3 * row.attention)
    target, ref = F.forward(FLUX1_DEV, 1, TEXT, 1024, 2048), F.forward(FLUX1_DEV, 1, TEXT, 1024)
    assert F.stage1_step(FLUX1_DEV, TEXT, 1024, 2) == (target + 2 * ref).trained()
    assert F.dpo_step(FLUX1_DEV, TEXT, 1024, 2) == 2 * ref + 2 * target + (2 * target).trained()
    assert F.generate_run(FLUX1_DEV, TEXT, 1024, 2, scenarios=3, candidates=2, steps=4) == \
        3 * (2 * ref + 8 * target)


def test_mfu_is_achieved_flops_per_second_over_the_peak():
    assert F.mfu(F.PEAK_BF16_TFLOPS * 1e12, 2.0) == 0.5
    assert F.mfu(F.Flops(1e12, 1e12), 1.0, peak_tflops=4.0) == 0.5
    assert F.mfu(1e12, None) is None
