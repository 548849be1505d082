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
