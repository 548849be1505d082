"""The GSA benchmark's parts run and agree with each other (figures themselves are not asserted)."""

import torch

from storyloop.bench.gsa import CONFIGS, _measure, flop_floor


def test_flop_floor_is_one_without_references_and_grows_with_them():
    cfg = CONFIGS["mid"]
    floors = [flop_floor(cfg, n) for n in range(4)]
    assert floors[0] == 1.0 and floors == sorted(floors) and floors[3] > floors[1]


def test_cached_and_uncached_measurements_end_on_the_same_latents():
    cached = _measure("tiny", "cached", 2, 3, "cpu", "float32")
    uncached = _measure("tiny", "uncached", 2, 3, "cpu", "float32")
    assert cached.step_s > 0 and cached.write_s > 0 and cached.peak_mb > 0
    assert torch.allclose(torch.tensor(cached.latents), torch.tensor(uncached.latents), atol=1e-5)


def test_reference_cache_grows_linearly_with_references_and_matches_the_written_cache():
    from storyloop.bench.gsa import reference_cache_mb
    from storyloop.bench.random_flux import build_transformer
    from storyloop.generation.flux import References, TextEmbeds, write_reference_cache
    from storyloop.generation.gsa import install_gsa

    cfg = CONFIGS["tiny"]
    assert reference_cache_mb(cfg, 0, 4) == 0 and reference_cache_mb(cfg, 6, 4) == 6 * reference_cache_mb(cfg, 1, 4)
    t = cfg["transformer"]
    model = build_transformer(t, "cpu", torch.float32).eval()
    install_gsa(model)
    g = torch.Generator().manual_seed(0)
    refs = References(torch.randn(6, 16, t["in_channels"], generator=g),
                      TextEmbeds(torch.randn(6, cfg["text_len"], t["joint_attention_dim"], generator=g),
                                 torch.randn(6, t["pooled_projection_dim"], generator=g)), cfg["grid"])
    with torch.no_grad():
        cache = write_reference_cache(model, refs).cache
    held = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache.values())
    assert held / 2**20 == reference_cache_mb(cfg, 6, 4)
