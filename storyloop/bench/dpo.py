"""`storyloop bench dpo`: one Diffusion-DPO optimizer step, ours against a naive step.

Ours: one no-grad reference pass (Stage-1 only) written to the GSA cache, then one policy forward
and one reference forward over [winner, loser] that both read it. Naive: four separate forwards
(policy winner, policy loser, reference winner, reference loser), each recomputing the references
in a [target, references] batch. Same model (base + Stage-1 LoRA + zero-init DPO LoRA), same pair,
noise and sigma, same gradient checkpointing; each variant in a fresh process so peak memory is its own.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import resource
import statistics
import time

from storyloop.bench.gsa import CONFIGS


PIXELS_PER_TOKEN = 16  # FLUX: the VAE's 8x downsampling, then 2x2 latent packing


def grid_for(config_name: str, resolution: int | None) -> tuple[int, int]:
    """The token grid of a square image of `resolution` pixels (default: the config's own grid)."""
    if resolution is None:
        return tuple(CONFIGS[config_name]["grid"])
    if resolution < PIXELS_PER_TOKEN or resolution % PIXELS_PER_TOKEN:
        raise ValueError(f"resolution must be a positive multiple of {PIXELS_PER_TOKEN}, got {resolution}")
    side = resolution // PIXELS_PER_TOKEN
    return side, side


def _measure(config_name: str, variant: str, refs: int, steps: int, device: str, dtype_name: str,
             resolution: int | None = None) -> dict:
    import torch
    from diffusers.training_utils import cast_training_params

    from storyloop.bench.random_flux import build_transformer
    from storyloop.dpo.data import PairBatchTensors
    from storyloop.dpo.loss import diffusion_dpo_loss, velocity_error
    from storyloop.dpo.trainer import ADAPTER, dpo_velocities
    from storyloop.generation.flux import References, TextEmbeds, predict_with_references
    from storyloop.generation.gsa import install_gsa
    from storyloop.generation.lora import adapter_off, add_lora, lora_config

    cfg = CONFIGS[config_name]
    t = cfg["transformer"]
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    # Made where it runs, in its dtype: FLUX.1-dev built on a CPU in float32 first would take minutes.
    model = build_transformer(t, device, dtype)
    add_lora(model, lora_config(16, 16, init="gaussian"), "stage1")
    add_lora(model, lora_config(16, 16, init=True), ADAPTER)
    model.set_adapters(["stage1", ADAPTER])
    for name, p in model.named_parameters():
        p.requires_grad_(f".{ADAPTER}." in name)
    cast_training_params(model, dtype=torch.float32)  # the DPO LoRA trains in fp32, as in the trainer
    install_gsa(model)
    model.enable_gradient_checkpointing()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    g = torch.Generator().manual_seed(1)
    grid = grid_for(config_name, resolution)
    tokens = grid[0] * grid[1]

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    def text(n):
        return TextEmbeds(rand(n, cfg["text_len"], t["joint_attention_dim"]), rand(n, t["pooled_projection_dim"]))

    batch = PairBatchTensors(rand(1, tokens, t["in_channels"]), rand(1, tokens, t["in_channels"]), text(1),
                             References(rand(refs, tokens, t["in_channels"]), text(refs), grid), refs, grid)
    noise, sigmas, beta = rand(1, tokens, t["in_channels"]), torch.tensor([0.6], device=device), 2000.0

    def step() -> float:
        if variant == "ours":
            policy, reference, target = dpo_velocities(model, batch, noise, sigmas, 3.5)
            err, ref = velocity_error(policy, target), velocity_error(reference, target)
            loss, _ = diffusion_dpo_loss(err[:1], err[1:], ref[:1], ref[1:], beta)
        else:
            s = sigmas.view(-1, 1, 1).to(dtype)
            xw, xl = (1 - s) * batch.winners + s * noise, (1 - s) * batch.losers + s * noise
            tw, tl = noise - batch.winners, noise - batch.losers
            pw = predict_with_references(model, xw, sigmas, batch.text, grid, batch.refs)
            pl = predict_with_references(model, xl, sigmas, batch.text, grid, batch.refs)
            with torch.no_grad(), adapter_off(model, ADAPTER):
                rw = predict_with_references(model, xw, sigmas, batch.text, grid, batch.refs)
                rl = predict_with_references(model, xl, sigmas, batch.text, grid, batch.refs)
            loss, _ = diffusion_dpo_loss(velocity_error(pw, tw), velocity_error(pl, tl), velocity_error(rw, tw),
                                         velocity_error(rl, tl), beta)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    loss0 = step()  # step 0 (DPO LoRA still zero) doubles as the warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"step_s": statistics.median(times), "peak_mb": peak, "loss0": loss0}


def _worker(args) -> dict:
    return _measure(*args)


def run_dpo_bench(config_name: str = "mid", refs: int = 2, steps: int = 5, device: str | None = None,
                  dtype: str | None = None, resolution: int | None = None) -> dict:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    grid = grid_for(config_name, resolution)  # a bad resolution fails before any process starts
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        ours = pool.apply(_worker, ((config_name, "ours", refs, steps, device, dtype, resolution),))
        naive = pool.apply(_worker, ((config_name, "naive", refs, steps, device, dtype, resolution),))
    return {"config": config_name, "device": device, "dtype": dtype, "refs": refs, "steps": steps,
            "grid": list(grid),
            "ours_s": round(ours["step_s"], 5), "naive_s": round(naive["step_s"], 5),
            "ours_over_naive": round(ours["step_s"] / naive["step_s"], 4),
            "ours_peak_mb": round(ours["peak_mb"], 1), "naive_peak_mb": round(naive["peak_mb"], 1),
            "loss_step0": ours["loss0"], "naive_loss_step0": naive["loss0"], "log2": math.log(2),
            "targets_met": {"ours_le_0.7x_naive": ours["step_s"] <= 0.7 * naive["step_s"],
                            "peak_no_worse": ours["peak_mb"] <= naive["peak_mb"],
                            "loss_step0_is_log2": abs(ours["loss0"] - math.log(2)) <= 1e-5}}
