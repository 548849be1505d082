"""An estimate of peak GPU memory for Stage-1 training, DPO training and generation in a memory mode.

Parameter counts come from the real configs built on the meta device (no memory, no download):
the FLUX transformer, and for FLUX.1 T5-XXL, CLIP-L and the 16-channel VAE. Everything else is
arithmetic over them. Sizes are in GiB (2^30 bytes), as GPUs are sold ("24 GB" = 24 GiB).

Notation: e = bytes per element of the compute dtype (bf16: 2), d = model width (heads x head dim),
K = transformer blocks (double + single; every one keeps reference K/V), T = text tokens (512),
L = image tokens of one image = (H / 16) (W / 16), N = references per target, B = batch, r = rank.
A "unit" is one hidden state of R rows: R (T + L) d e bytes.

  weights      linear weights w by the base's storage: none w e; nf4 w/2 + 4 B per 64 weights;
               int8 w + 5 B per output row; fp8 w + 4 B per output row (see memory.QUANTIZATIONS),
               plus every other transformer parameter (biases, norms, embeddings) at e.
  lora         P = r x sum over adapted linears (in + out). Trainable, fp32: 4P params + 4P grads +
               8P AdamW state (2P with 8-bit AdamW). DPO also holds the frozen Stage-1 LoRA, and
               generation both LoRAs, at e per parameter.
  refs K/V     2 K x (reference rows) x L x d x e: K and V of every block, image tokens only.
  activations  training, rows R: with gradient checkpointing K units (each block's saved input) +
               A_TRAIN units + the targets' GSA keys (one block recomputed for backward); without,
               K x (A_TRAIN units + GSA keys). GSA keys: K and V of the targets' T + L + N L keys,
               2 (targets) (T + L + N L) d e. Generation: A_INFER units + GSA keys (one block, no graph).
  rows         stage1: B (1 + N), targets and references in one forward with grad (no cache);
               dpo: 2B (winners, losers) reading cached K/V of B N references;
               generate: B candidates reading cached K/V of N references.
  encoders     T5 + CLIP + VAE at e while on the GPU. Modes that offload them pay for them only in
               the encode phase (they run beside the transformer, then leave); "full" keeps them.
  vae          decoding (generation) or encoding one image (training's encode phase):
               images at once x H W x 2 c0 x e x VAE_TENSORS, c0 = the VAE's first block channels;
               slicing makes it one image at a time.
  context      CUDA_CONTEXT_GB for the CUDA context and cuBLAS workspaces: nvidia-smi and
               torch.cuda.mem_get_info see it, torch.cuda.max_memory_allocated does not.

  peak         max over phases + context: encode (weights + encoders + one VAE image) and
               train/sample (weights + LoRAs + optimizer + refs K/V + activations [+ encoders]).

A_TRAIN = 48 hidden-state-sized tensors per block: ~24 the block keeps for backward (LayerNorm and
modulation outputs, q/k/v and rotated q/k, attention output, the 4d MLP input and its GELU output,
gated residuals), ~18 that peft adds by copying each adapted linear's input to fp32 for the LoRA
(2 units per d-wide input), ~6 for gradients alive during the block's backward. A_INFER = 16: the
largest set alive at once in one block without a graph (MLP input and output, q/k/v, concat).
These are counts from reading diffusers' FLUX blocks and peft's LoRA layer, not measurements; the
GPU check reports the measured peak beside this estimate (`bench memory --measured`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from storyloop.generation.errors import ModelError
from storyloop.generation.memory import (QUANTIZATIONS, SMALLER, USES, MemoryMode, MemoryPlan, memory_mode,
                                         quantization_spec)

GIB = 2 ** 30
A_TRAIN = 48
A_INFER = 16
VAE_TENSORS = 4
CUDA_CONTEXT_GB = 0.5

# FLUX.1-dev's transformer (as storyloop.bench.gsa.CONFIGS["flux1-dev"]), text encoders and VAE
# (the configs in black-forest-labs/FLUX.1-dev).
FLUX1_DEV_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                             num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                             guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FLUX1_T5 = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
FLUX1_CLIP = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
FLUX1_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                 sample_size=1024)


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts of a FLUX pipeline, the inputs of every estimate."""

    width: int  # d
    blocks: int  # double + single
    linear_weights: int  # weight elements of the transformer's nn.Linear layers (what quantisation stores)
    linear_rows: int  # their output rows (per-row scales)
    other_params: int  # every other transformer parameter (biases, norms, embeddings)
    lora_per_rank: int  # sum over the LoRA-adapted linears of (in + out): LoRA params = rank x this
    t5: int = 0
    clip: int = 0
    vae: int = 0
    vae_channels: int = 0  # the VAE's first block's channels (0: no VAE counted)
    pixels_per_token: int = 16  # VAE factor 8 x 2x2 packing

    @property
    def transformer(self) -> int:
        return self.linear_weights + self.other_params


def _count_transformer(config: dict) -> dict:
    import torch
    from diffusers import FluxTransformer2DModel

    from storyloop.generation.lora import BLOCK_LINEARS

    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    linear_weights = linear_rows = lora = 0
    adapted = re.compile(BLOCK_LINEARS)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear_weights += module.weight.numel()
            linear_rows += module.out_features
            if adapted.fullmatch(name):  # peft matches a string target_modules with re.fullmatch
                lora += module.in_features + module.out_features
    total = sum(p.numel() for p in model.parameters())
    return dict(width=model.config.num_attention_heads * model.config.attention_head_dim,
                blocks=len(model.transformer_blocks) + len(model.single_transformer_blocks),
                linear_weights=linear_weights, linear_rows=linear_rows, other_params=total - linear_weights,
                lora_per_rank=lora)


def _count_flux1_encoders() -> dict:
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with torch.device("meta"):
        models = (T5EncoderModel(T5Config(**FLUX1_T5)), CLIPTextModel(CLIPTextConfig(**FLUX1_CLIP)),
                  AutoencoderKL(**FLUX1_VAE))
    t5, clip, vae = (sum(p.numel() for p in m.parameters()) for m in models)
    return dict(t5=t5, clip=clip, vae=vae, vae_channels=FLUX1_VAE["block_out_channels"][0])


@lru_cache(maxsize=8)
def _sizes(config_json: str, encoders: str | None) -> ModelSizes:
    counts = _count_transformer(json.loads(config_json))
    if encoders == "flux1":
        counts.update(_count_flux1_encoders())
    elif encoders is not None:
        raise ValueError(f"encoders must be 'flux1' or None, got {encoders!r}")
    return ModelSizes(**counts)


def model_sizes(transformer_config: dict, encoders: str | None = "flux1") -> ModelSizes:
    """Counts from `transformer_config` (FluxTransformer2DModel kwargs or its config.json) built on meta;
    `encoders="flux1"` adds FLUX.1's T5-XXL, CLIP-L and VAE, None counts no encoders."""
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(transformer_config).items()}
    return _sizes(json.dumps(config, sort_keys=True), encoders)


@dataclass(frozen=True)
class Workload:
    """What one use processes at a time."""

    height: int = 512
    width: int = 512
    refs: int = 2  # N references per target
    batch: int = 1  # targets (stage1), pairs (dpo) or candidates (generate) per forward
    rank: int = 16  # of each LoRA
    text_len: int = 512

    def tokens(self, sizes: ModelSizes) -> int:
        p = sizes.pixels_per_token
        if self.height % p or self.width % p:
            raise ModelError(f"image size {self.width}x{self.height} must be a multiple of {p}")
        return (self.height // p) * (self.width // p)


@dataclass
class Estimate:
    """Bytes by part and phase for one use; `peak` is what the GPU must hold."""

    use: str
    mode: str
    quantization: str
    parts: dict[str, int]  # bytes by part (each counted once)
    phases: dict[str, int] = field(default_factory=dict)  # bytes by phase, context excluded
    budget_gb: float | None = None

    @property
    def peak(self) -> int:
        return max(self.phases.values()) + self.parts["cuda_context"]

    @property
    def peak_gb(self) -> float:
        return self.peak / GIB

    @property
    def fits(self) -> bool | None:
        return None if self.budget_gb is None else self.peak_gb <= self.budget_gb

    def summary(self, digits: int = 2) -> dict:
        return {"estimated_gb": round(self.peak_gb, digits), "budget_gb": self.budget_gb, "fits": self.fits,
                "quantization": self.quantization,
                "parts_gb": {k: round(v / GIB, digits) for k, v in self.parts.items()},
                "phases_gb": {k: round(v / GIB, digits) for k, v in self.phases.items()}}


def gpu_plan(mode: str | MemoryMode, quantization: str | None = None) -> MemoryPlan:
    """What `mode` does on a CUDA GPU with its backends installed (the estimate's premise)."""
    m = memory_mode(mode)
    quant = m.quantization if quantization in (None, "auto") else quantization_spec(quantization).name
    return MemoryPlan(m, "cuda", "bfloat16", quant, m.offload_encoders, m.offload_vae, m.vae_slicing,
                      m.vae_tiling, m.gradient_checkpointing, m.adam_8bit)


def weight_bytes(sizes: ModelSizes, quantization: str, e: int = 2) -> int:
    q = QUANTIZATIONS[quantization]
    if q.name == "none":
        linear = sizes.linear_weights * e
    else:
        blocks = math.ceil(sizes.linear_weights / q.block) if q.block else 0
        linear = round(sizes.linear_weights * q.weight_bytes) + sizes.linear_rows * q.row_bytes + blocks * q.block_bytes
    return linear + sizes.other_params * e


def vae_bytes(sizes: ModelSizes, height: int, width: int, images: int, e: int = 2) -> int:
    return images * height * width * 2 * sizes.vae_channels * e * VAE_TENSORS


def estimate(use: str, plan: MemoryPlan, sizes: ModelSizes, work: Workload, e: int = 2) -> Estimate:
    """Peak GPU memory of `use` (stage1, dpo, generate) under `plan` (formula in the module docstring)."""
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}, got {use!r}")
    d, k, n, b = sizes.width, sizes.blocks, work.refs, work.batch
    tokens = work.tokens(sizes)  # L
    seq = work.text_len + tokens  # T + L
    p = work.rank * sizes.lora_per_rank
    encoders = (sizes.t5 + sizes.clip + sizes.vae) * e
    vae_weights = sizes.vae * e
    parts = {"weights": weight_bytes(sizes, plan.quantization, e)}

    if use == "generate":
        rows, cache_rows, targets = b, n, b
        parts["lora"] = 2 * p * e  # Stage-1 and DPO LoRAs, frozen
        parts["optimizer"] = 0
    else:
        rows, cache_rows, targets = (b * (1 + n), 0, b) if use == "stage1" else (2 * b, b * n, 2 * b)
        parts["lora"] = 4 * p + (p * e if use == "dpo" else 0)  # trainable fp32 (+ the frozen Stage-1 LoRA)
        parts["optimizer"] = 4 * p + (2 * p if plan.adam_8bit else 8 * p)  # grads + AdamW state
    parts["reference_kv"] = 2 * k * cache_rows * tokens * d * e
    unit = rows * seq * d * e
    gsa_keys = 2 * targets * (seq + n * tokens) * d * e if n else 0
    if use == "generate":
        parts["activations"] = A_INFER * unit + gsa_keys
        images = 1 if plan.vae_slicing else b
        parts["vae_decode"] = vae_bytes(sizes, work.height, work.width, images, e)
    elif plan.gradient_checkpointing:
        parts["activations"] = k * unit + A_TRAIN * unit + gsa_keys
    else:
        parts["activations"] = k * (A_TRAIN * unit + gsa_keys)
    parts["encoders"] = encoders
    parts["cuda_context"] = round(CUDA_CONTEXT_GB * GIB)

    resident_encoders = 0 if plan.offload_encoders else encoders
    if use == "generate" and plan.offload_encoders:
        resident_encoders = vae_weights  # the VAE stays to decode
    work_phase = parts["weights"] + parts["lora"] + parts["optimizer"] + parts["reference_kv"] + resident_encoders
    if use == "generate":
        work_phase += max(parts["activations"], parts["vae_decode"])
    else:
        work_phase += parts["activations"]
    encode_phase = parts["weights"] + encoders + vae_bytes(sizes, work.height, work.width, 1, e)
    name = "sample" if use == "generate" else "train"
    return Estimate(use, plan.mode.name, plan.quantization, parts, {"encode": encode_phase, name: work_phase},
                    plan.mode.budget_gb)


def check_fits(mode: str | MemoryMode, use: str, device, *, sizes: ModelSizes | None = None,
               work: Workload | None = None, quantization: str | None = None,
               free_gb: float | None = None) -> Estimate | None:
    """On CUDA, refuse (one-line ModelError) a use whose estimate exceeds the GPU's free memory.

    Call it before loading anything onto the GPU. `sizes` defaults to FLUX.1-dev, `work` to
    512x512 with 2 references; `free_gb` replaces `torch.cuda.mem_get_info` (tests). On a CPU it
    does nothing and returns None; otherwise it returns the estimate it checked.
    """
    if str(device).split(":")[0] != "cuda":
        return None
    sizes = sizes or model_sizes(FLUX1_DEV_TRANSFORMER)
    result = estimate(use, gpu_plan(mode, quantization), sizes, work or Workload())
    if free_gb is None:
        import torch

        free_gb = torch.cuda.mem_get_info(device)[0] / GIB
    if result.peak_gb > free_gb:
        smaller = SMALLER.get(result.mode)
        advice = (f"use --set memory={smaller}" if smaller else
                  "no smaller mode: use fewer references, a smaller resolution or batch, or a larger GPU")
        raise ModelError(f"{use} in memory mode {result.mode} needs about {result.peak_gb:.1f} GB of GPU memory, "
                         f"{device} has {free_gb:.1f} GB free: {advice}")
    return result
