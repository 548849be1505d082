"""`storyloop bench memory`: estimated peak GPU memory of Stage-1, DPO and generation in a memory mode.

Nothing runs on a GPU: the figures come from parameter counts of the real configs (built on the
meta device) and the formula documented in `storyloop.generation.memory_estimate`: weights by the
base's storage, LoRA + gradients + AdamW state, cached reference K/V, activations with or without
gradient checkpointing, text encoders / VAE while they are on the GPU, and a CUDA context
allowance; the peak is the larger of the encode phase and the train/sample phase. `--measured`
puts a GPU check's measured peaks beside the estimate (`measured_gb`, null until one exists).
"""

from __future__ import annotations

import json
from pathlib import Path

from storyloop.generation.errors import ModelError
from storyloop.generation.memory import USES, memory_mode
from storyloop.generation.memory_estimate import GIB, Workload, estimate, gpu_plan, model_sizes

# Published peaks to hold the estimate against (DESIGN.md, "Memory on real GPUs"): diffusers' FLUX LoRA
# recipe with cached latents and embeddings (encoders already gone), rank 4, 512x768, no references.
ANCHOR = "diffusers' FLUX LoRA recipe: rank 4, 512x768, no references, embeddings cached beforehand"
PUBLISHED_GB = {"24gb": 9.0,  # QLoRA: NF4 base, 8-bit Adam, gradient checkpointing, on a 4090
                "80gb": 26.0}  # the same in bf16


def read_measured(path: Path, mode: str) -> dict[str, float]:
    """Measured peaks (GiB) per use from a GPU check's JSON: {"peak_gb": {mode: {use: GB}}}, {mode: {...}}
    or {use: GB}; a file without figures for `mode` is a one-line error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read measured figures ({exc})") from None
    for candidate in (data.get("peak_gb", {}).get(mode) if isinstance(data.get("peak_gb"), dict) else None,
                      data.get(mode), data):
        if isinstance(candidate, dict):
            figures = {u: candidate[u] for u in USES if isinstance(candidate.get(u), (int, float))}
            if figures:
                return {u: float(v) for u, v in figures.items()}
    raise ModelError(f"{path}: no measured peak for mode {mode} (expected "
                     f'{{"peak_gb": {{"{mode}": {{"stage1": GB, "dpo": GB, "generate": GB}}}}}})')


def run_memory_bench(config: str = "flux1-dev", mode: str = "24gb", resolution: int = 512, refs: int = 2,
                     rank: int = 16, batch_size: int = 1, generate_resolution: int = 1024,
                     generate_batch_size: int = 4, quantization: str | None = None,
                     measured: Path | None = None) -> dict:
    from storyloop.bench.gsa import CONFIGS

    if config not in CONFIGS:
        raise ModelError(f"--config must be one of {', '.join(CONFIGS)}")
    m = memory_mode(mode)
    plan = gpu_plan(m, quantization)
    cfg = CONFIGS[config]
    sizes = model_sizes(cfg["transformer"], "flux1" if config == "flux1-dev" else None)
    text_len = cfg["text_len"]
    train = Workload(resolution, resolution, refs, batch_size, rank, text_len)
    works = {"stage1": train, "dpo": train,
             "generate": Workload(generate_resolution, generate_resolution, refs, generate_batch_size, rank, text_len)}
    results = {use: estimate(use, plan, sizes, works[use]) for use in USES}
    anchor = estimate("stage1", plan, sizes, Workload(768, 512, 0, 1, 4, text_len))
    return {
        "config": config, "mode": m.name, "mode_help": m.help, "budget_gb": m.budget_gb,
        "quantization": plan.quantization, "gradient_checkpointing": plan.gradient_checkpointing,
        "adam_8bit": plan.adam_8bit, "offload_encoders": plan.offload_encoders,
        "workload": {use: {"resolution": [w.width, w.height], "refs": w.refs, "batch": w.batch, "rank": w.rank,
                           "text_tokens": w.text_len} for use, w in works.items()},
        "params": {"transformer": sizes.transformer, "linear_weights": sizes.linear_weights,
                   "lora_per_adapter": rank * sizes.lora_per_rank, "t5": sizes.t5, "clip": sizes.clip,
                   "vae": sizes.vae},
        "estimated_gb": {use: round(r.peak_gb, 2) for use, r in results.items()},
        "fits": {use: r.fits for use, r in results.items()},
        "breakdown_gb": {use: {**r.summary()["parts_gb"], "phases": r.summary()["phases_gb"]}
                         for use, r in results.items()},
        "measured_gb": read_measured(measured, m.name) if measured else None,
        "anchor": {"setting": ANCHOR,
                   "published_gb": PUBLISHED_GB.get(m.name) if quantization in (None, "auto") else None,
                   "estimated_gb": round((anchor.phases["train"] + anchor.parts["cuda_context"]) / GIB, 2)},
    }


def lines(result: dict) -> list[str]:
    """One readable line per use: the estimate, its largest parts, and whether it fits the mode's budget."""
    out = [f"{result['config']} in memory mode {result['mode']}: {result['mode_help']}"]
    budget = result["budget_gb"]
    for use, gb in result["estimated_gb"].items():
        w = result["workload"][use]
        parts = dict(result["breakdown_gb"][use])
        phases = parts.pop("phases")
        context = parts.pop("cuda_context")
        if result["offload_encoders"]:
            parts.pop("encoders")  # on the GPU in the encode phase only
        top = sorted(((v, k) for k, v in parts.items()), reverse=True)[:3]
        verdict = ("no budget (whatever the GPU has)" if budget is None else
                   f"fits {budget:g} GB" if result["fits"][use] else f"does NOT fit {budget:g} GB")
        measured = result["measured_gb"] or {}
        seen = f", measured {measured[use]:.1f} GB" if use in measured else ""
        out.append(f"  {use:<8} {w['resolution'][0]}x{w['resolution'][1]}, {w['refs']} refs, batch {w['batch']}: "
                   f"~{gb:.1f} GB{seen} -> {verdict}; phases "
                   + " / ".join(f"{k} {v:.1f}" for k, v in phases.items())
                   + f" + {context:.1f} context; largest: {', '.join(f'{k} {v:.1f}' for v, k in top)}")
    return out
