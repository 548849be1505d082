"""`storyloop bench gsa`: what GSA costs per denoising step, cached and uncached, against plain FLUX.

For N = 0..6 references (a frame with two or three characters takes 2-3 images of each) it times the sampler's steps three ways: plain (stock attention, no
references), uncached ([target, references] in every forward) and cached (references written once,
then read at every step), each in a fresh process so peak memory is that variant's own. It checks
that cached and uncached give the same latents after the full loop, and compares the cached/plain
ratio with the floor a FLOP count predicts: plain work plus the target's attention over the extra
N x L reference keys in every block. `reference_cache_mb` is what the cache holds per N (computed: K and V of
N x L image tokens in every block, in the run's dtype); the targets are checked at N = 3.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

# FLUX-architecture configs. "mid" runs on a 2-core CPU in well under a minute per variant.
CONFIGS = {
    "tiny": dict(transformer=dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
                 grid=(4, 4), text_len=8),  # smoke tests only
    "mid": dict(transformer=dict(patch_size=1, in_channels=64, num_layers=3, num_single_layers=6,
                                 attention_head_dim=64, num_attention_heads=6, joint_attention_dim=512,
                                 pooled_projection_dim=256, guidance_embeds=True, axes_dims_rope=(8, 28, 28)),
                grid=(16, 16), text_len=128),
    # FLUX.1-dev itself (random weights): 1024 x 1024 -> 64 x 64 tokens, 512 T5 tokens.
    "flux1-dev": dict(transformer=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                       attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                       pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
                      grid=(64, 64), text_len=512),
}


@dataclass
class Measurement:
    step_s: float  # median seconds per denoising step
    peak_mb: float
    latents: list | None = None  # final latents (for the cached/uncached comparison), as nested lists
    write_s: float = 0.0  # one-time reference pass (cached variant)


def flop_floor(cfg: dict, refs: int) -> float:
    """Predicted cached/plain ratio: (plain + extra attention over reference keys) / plain."""
    t = cfg["transformer"]
    d = t["num_attention_heads"] * t["attention_head_dim"]
    blocks = t["num_layers"] + t["num_single_layers"]
    img = cfg["grid"][0] * cfg["grid"][1]
    seq = cfg["text_len"] + img
    # Multiply-adds per block: 12 d^2 per token of linears (double: qkv 3 + out 1 + MLP 8, per stream;
    # single: qkv 3 + MLP 4 + out 5), plus QK^T and AV over the sequence.
    linear = 12 * d * d * seq
    attention = 2 * seq * seq * d
    extra = 2 * seq * refs * img * d
    return (blocks * (linear + attention + extra)) / (blocks * (linear + attention))


def reference_cache_mb(cfg: dict, refs: int, dtype_bytes: int) -> float:
    """Memory of the reference K/V cache: K and V of every reference image token, in every block."""
    t = cfg["transformer"]
    blocks = t["num_layers"] + t["num_single_layers"]
    tokens = refs * cfg["grid"][0] * cfg["grid"][1]
    return blocks * 2 * tokens * t["num_attention_heads"] * t["attention_head_dim"] * dtype_bytes / 2**20


TARGET_REFS = 3  # where the speed targets are checked


def _measure(config_name: str, variant: str, refs: int, steps: int, device: str, dtype_name: str) -> Measurement:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from storyloop.bench.random_flux import build_transformer
    from storyloop.generation.flux import References, TextEmbeds, write_reference_cache
    from storyloop.generation.gsa import install_gsa
    from storyloop.generation.sampling import sample

    cfg = CONFIGS[config_name]
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    # Made where it runs, in its dtype: FLUX.1-dev built on a CPU in float32 first would take minutes.
    model = build_transformer(cfg["transformer"], device, dtype).eval()
    if variant != "plain":
        install_gsa(model)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    t = cfg["transformer"]
    g = torch.Generator().manual_seed(1)

    def text(n):
        return TextEmbeds(torch.randn(n, cfg["text_len"], t["joint_attention_dim"], generator=g).to(device),
                          torch.randn(n, t["pooled_projection_dim"], generator=g).to(device))

    grid = cfg["grid"]
    prompt = text(1)
    ref_set = None
    if variant != "plain" and refs:
        ref_set = References(torch.randn(refs, grid[0] * grid[1], t["in_channels"], generator=g).to(device),
                             text(refs), grid)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    kw = dict(text=prompt, grid=grid, seeds=[0], refs=ref_set, num_inference_steps=steps,
              use_cache=variant == "cached")
    sample(model, scheduler, **{**kw, "num_inference_steps": 1})  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    write_s, cache = 0.0, None
    if variant == "cached" and ref_set is not None:
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            cache = write_reference_cache(model, ref_set)
        sync()
        write_s = time.perf_counter() - start
    stamps = [time.perf_counter()]

    def on_step(_):
        sync()
        stamps.append(time.perf_counter())

    latents = sample(model, scheduler, **kw, reference_cache=cache, on_step=on_step)
    step_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return Measurement(step_s, peak, latents.float().cpu().tolist(), write_s)


def _worker(args) -> dict:
    return asdict(_measure(*args))


def run_gsa_bench(config_name: str = "mid", max_refs: int = 6, steps: int = 10, device: str | None = None,
                  dtype: str | None = None, log=print) -> dict:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    ctx = mp.get_context("spawn")
    result: dict = {"config": config_name, "device": device, "dtype": dtype, "steps": steps,
                    "refs": [], "plain_s": [], "uncached_s": [], "cached_s": [], "cache_write_s": [],
                    "flop_floor": [], "cached_over_plain": [], "uncached_over_cached": [],
                    "peak_mb_plain": [], "peak_mb_uncached": [], "peak_mb_cached": [], "max_abs_diff": 0.0,
                    "reference_cache_mb": []}
    dtype_bytes = 4 if dtype == "float32" else 2
    # One fresh process per measurement: peak memory is then that variant's alone.
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for n in range(max_refs + 1):
            plain = pool.apply(_worker, ((config_name, "plain", 0, steps, device, dtype),))  # again per N: drift
            uncached = pool.apply(_worker, ((config_name, "uncached", n, steps, device, dtype),))
            cached = pool.apply(_worker, ((config_name, "cached", n, steps, device, dtype),))
            a, b = torch.tensor(cached["latents"]), torch.tensor(uncached["latents"])
            diff = float((a - b).abs().max())
            floor = flop_floor(CONFIGS[config_name], n)
            for key, value in (("refs", n), ("plain_s", plain["step_s"]), ("uncached_s", uncached["step_s"]),
                               ("cached_s", cached["step_s"]), ("cache_write_s", cached["write_s"]),
                               ("flop_floor", floor), ("cached_over_plain", cached["step_s"] / plain["step_s"]),
                               ("uncached_over_cached", uncached["step_s"] / cached["step_s"]),
                               ("peak_mb_plain", plain["peak_mb"]), ("peak_mb_uncached", uncached["peak_mb"]),
                               ("peak_mb_cached", cached["peak_mb"]),
                               ("reference_cache_mb", reference_cache_mb(CONFIGS[config_name], n, dtype_bytes))):
                result[key].append(round(value, 6) if isinstance(value, float) else value)
            result["max_abs_diff"] = max(result["max_abs_diff"], diff)
            log(f"N={n}: plain {plain['step_s'] * 1e3:.1f} ms/step, uncached {uncached['step_s'] * 1e3:.1f}, "
                f"cached {cached['step_s'] * 1e3:.1f} (x{cached['step_s'] / plain['step_s']:.2f} of plain, "
                f"FLOP floor x{floor:.2f}), cached vs uncached max |diff| {diff:.2e}")
    n3 = result["refs"].index(min(TARGET_REFS, max_refs))
    result["targets_met"] = {
        "cached_over_plain_le_1.1x_floor": result["cached_over_plain"][n3] <= 1.1 * result["flop_floor"][n3],
        "uncached_over_cached_ge_2": result["uncached_over_cached"][n3] >= 2,
        "max_abs_diff_le_1e-4": result["max_abs_diff"] <= 1e-4 or dtype != "float32",
    }
    return result


if __name__ == "__main__":  # pragma: no cover - convenience
    import json

    print(json.dumps(run_gsa_bench(*(sys.argv[1:2] or ["mid"]))))
