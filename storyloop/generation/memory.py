"""Memory modes: which memory savings Stage-1 training, DPO training and generation use.

One choice per use, `memory=full|80gb|24gb`, each a fixed set of the savings FLUX LoRA trainers use:

| mode  | frozen transformer (CUDA) | encoders leave the GPU | VAE decode        | grad. checkpointing | optimizer   |
|-------|---------------------------|------------------------|-------------------|---------------------|-------------|
| full  | bf16                      | no                     | whole batch       | no                  | AdamW fp32  |
| 80gb  | bf16                      | yes, once cached       | sliced            | yes                 | AdamW fp32  |
| 24gb  | NF4 (bitsandbytes)        | yes, once cached       | sliced and tiled  | yes                 | 8-bit AdamW*|

(*) bitsandbytes' AdamW8bit when bitsandbytes is installed, else AdamW with fp32 state.

Always: weights and activations in bfloat16 on CUDA, float32 on a CPU; float16 is refused
(`FP16_REFUSED`). LoRA weights, their gradients and optimizer state stay fp32 on top of any base.
On a CPU a mode changes nothing that needs a GPU: the base stays unquantised unless a quantisation
is asked for explicitly, and there is nothing to offload to.

`quantization=auto|none|nf4|int8|fp8` overrides the mode's choice for the frozen transformer
(`auto` = the mode's). Each goes through diffusers' quantisation configs in `from_pretrained`:

| name | backend      | diffusers config                         | weights stored as                    | runs on   |
|------|--------------|------------------------------------------|--------------------------------------|-----------|
| none | -            | -                                        | bf16 (CUDA) / fp32 (CPU)             | CUDA, CPU |
| nf4  | bitsandbytes | BitsAndBytesConfig(load_in_4bit, nf4)    | 4 bit + an fp32 absmax per 64        | CUDA      |
| int8 | torchao      | TorchAoConfig(Int8WeightOnlyConfig())    | int8 + fp32 scale, int8 zero per row | CUDA, CPU |
| fp8  | torchao      | TorchAoConfig(Float8WeightOnlyConfig())  | float8 e4m3 + an fp32 scale per row  | CUDA, CPU |

Weight-only: activations stay bf16, weights are dequantised inside each linear. peft adds LoRA
layers on all of them (bitsandbytes' Linear4bit, torchao tensors); a LoRA trained on a quantised
base is an ordinary LoRA and loads onto the unquantised base. The CPU rows were checked here with
a tiny FLUX (tests/generation/test_quantized.py); the CUDA rows are what the backends document.
Only the transformer is quantised: T5 leaves the GPU once the prompts are encoded instead.

This module holds the definitions and the parts of a mode that act on a loaded pipeline
(`apply_memory_plan`, `offload_encoders`, `encoders_on`, `adamw`); loading is
`storyloop.generation.models.load_flux(..., quantization=...)`; the estimate of what a mode needs is
`storyloop.generation.memory_estimate`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from storyloop.generation.errors import ModelError

Use = Literal["stage1", "dpo", "generate"]
USES: tuple[str, ...] = ("stage1", "dpo", "generate")

FP16_REASON = "FLUX activations overflow in float16 (inf/NaN images, NaN losses)"
FP16_REFUSED = f"float16 is refused: {FP16_REASON}; use bfloat16 on a GPU (float32 on a CPU)"


@dataclass(frozen=True)
class Quantization:
    """One way to store the frozen transformer's linear weights."""

    name: str
    backend: str | None  # the pip package it needs (None: nothing to install)
    devices: tuple[str, ...]  # device types it runs on
    weight_bytes: float  # bytes per linear weight element
    row_bytes: int  # extra bytes per output row (scales, zero points)
    block: int  # weights per absmax block (0: none)
    block_bytes: int  # bytes per block
    help: str


QUANTIZATIONS: dict[str, Quantization] = {q.name: q for q in (
    Quantization("none", None, ("cuda", "cpu"), 0.0, 0, 0, 0,
                 "no quantisation: the compute dtype (bf16 on CUDA, fp32 on CPU)"),
    Quantization("nf4", "bitsandbytes", ("cuda",), 0.5, 0, 64, 4,
                 "4-bit NormalFloat weights, bf16 compute (QLoRA); bitsandbytes, CUDA"),
    Quantization("int8", "torchao", ("cuda", "cpu"), 1.0, 5, 0, 0,
                 "int8 weight-only, a scale per output row; torchao, CUDA or CPU"),
    Quantization("fp8", "torchao", ("cuda", "cpu"), 1.0, 4, 0, 0,
                 "float8 (e4m3) weight-only, a scale per output row; torchao, CUDA or CPU"),
)}
QUANTIZATION_CHOICES: tuple[str, ...] = ("auto", *QUANTIZATIONS)


@dataclass(frozen=True)
class MemoryMode:
    """What one memory mode does; `budget_gb` is the GPU memory (GiB) it is meant to fit in."""

    name: str
    budget_gb: float | None  # None: no target, whatever the GPU has
    quantization: str  # of the frozen transformer, on CUDA
    offload_encoders: bool  # T5 and CLIP leave the GPU once the prompts are encoded
    offload_vae: bool  # training: the VAE leaves the GPU once latents are cached (generation keeps it to decode)
    vae_slicing: bool  # decode a batch one image at a time
    vae_tiling: bool  # decode large images in overlapping tiles
    gradient_checkpointing: bool  # recompute block activations in backward
    adam_8bit: bool  # bitsandbytes' AdamW8bit, when bitsandbytes is installed
    help: str


MODES: dict[str, MemoryMode] = {m.name: m for m in (
    MemoryMode("full", None, "none", False, False, False, False, False, False,
               "no savings, fastest: bf16 base, everything stays on the GPU, no checkpointing"),
    MemoryMode("80gb", 80.0, "none", True, True, True, False, True, False,
               "bf16 base; encoders leave the GPU once cached; gradient checkpointing; sliced VAE decode"),
    MemoryMode("24gb", 24.0, "nf4", True, True, True, True, True, True,
               "NF4 base (bitsandbytes); encoders leave the GPU; checkpointing; 8-bit AdamW; sliced+tiled VAE"),
)}
SMALLER = {"full": "80gb", "80gb": "24gb"}  # what to suggest when a mode does not fit


@dataclass(frozen=True)
class MemoryPlan:
    """A mode resolved for one device: what the loader and the trainers actually do."""

    mode: MemoryMode
    device_type: str  # "cuda", "cpu", ...
    dtype: str  # "bfloat16" or "float32" (torch attribute name)
    quantization: str  # a QUANTIZATIONS key
    offload_encoders: bool
    offload_vae: bool
    vae_slicing: bool
    vae_tiling: bool
    gradient_checkpointing: bool
    adam_8bit: bool

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def memory_mode(name: str | MemoryMode) -> MemoryMode:
    if isinstance(name, MemoryMode):
        return name
    if name not in MODES:
        raise ModelError(f"memory mode {name!r} is not one of {', '.join(MODES)}")
    return MODES[name]


def quantization_spec(name: str) -> Quantization:
    if name not in QUANTIZATIONS:
        raise ModelError(f"quantization {name!r} is not one of {', '.join(QUANTIZATION_CHOICES)}")
    return QUANTIZATIONS[name]


def installed(package: str) -> bool:
    """Whether `package` imports (a package that is present but broken counts as missing)."""
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def _device_type(device) -> str:
    return str(device).split(":")[0]


def resolve(mode: str | MemoryMode = "full", device="cpu", quantization: str | None = None) -> MemoryPlan:
    """The plan for `mode` on `device`; `quantization` (None or "auto": the mode's) overrides the base's."""
    m = memory_mode(mode)
    kind = _device_type(device)
    on_gpu = kind != "cpu"
    if quantization in (None, "auto"):
        quant = m.quantization if on_gpu else "none"  # the modes quantise to fit a GPU; a CPU has RAM
    else:
        quant = quantization_spec(quantization).name
    return MemoryPlan(m, kind, "bfloat16" if on_gpu else "float32", quant,
                      m.offload_encoders and on_gpu, m.offload_vae and on_gpu, m.vae_slicing, m.vae_tiling,
                      m.gradient_checkpointing, m.adam_8bit and on_gpu and installed("bitsandbytes"))


def check_dtype(dtype) -> None:
    """Refuse float16 for FLUX (given as a torch dtype or its name), with the reason."""
    if str(dtype).removeprefix("torch.") in ("float16", "half", "fp16"):
        raise ModelError(FP16_REFUSED)


def require_backend(quantization: str, device="cpu") -> Quantization:
    """The quantisation's definition, after checking its backend is installed and runs on `device`."""
    q = quantization_spec(quantization)
    kind = _device_type(device)
    if kind not in q.devices:
        others = [n for n, o in QUANTIZATIONS.items() if n != "none" and kind in o.devices]
        raise ModelError(f"quantization={q.name} ({q.backend}) runs on {' or '.join(q.devices).upper()} only, "
                         f"not {kind}" + (f"; here use {' or '.join(others)}" if others else ""))
    if q.backend is not None and not installed(q.backend):
        raise ModelError(f"quantization={q.name} needs {q.backend}, which is not installed: "
                         f"pip install {q.backend}")
    return q


def quantization_config(quantization: str, dtype, device="cpu"):
    """diffusers' quantisation config for the transformer's `from_pretrained` (None for "none")."""
    q = require_backend(quantization, device)
    if q.name == "none":
        return None
    if q.name == "nf4":
        from diffusers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    from diffusers import TorchAoConfig
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig() if q.name == "int8" else Float8WeightOnlyConfig())


# -- the parts of a mode that act on a loaded pipeline -------------------------------------------------

def _encoders(pipe, vae: bool) -> list:
    mods = [pipe.text_encoder, pipe.text_encoder_2] + ([pipe.vae] if vae else [])
    return [m for m in mods if m is not None]


def offload_encoders(pipe, include_vae: bool = True) -> None:
    """Move the text encoders (and the VAE) to the CPU and give their GPU memory back.

    Call once their outputs are cached: training after the dataset is encoded; generation after
    the prompts are encoded (keep the VAE there to decode: `include_vae=False`).
    """
    import torch

    for module in _encoders(pipe, include_vae):
        module.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def encoders_on(pipe, device, include_vae: bool = False) -> Iterator[None]:
    """For a block of encoding in an offloaded plan: encoders on `device` inside, on the CPU after."""
    for module in _encoders(pipe, include_vae):
        module.to(device)
    try:
        yield
    finally:
        offload_encoders(pipe, include_vae)


def apply_memory_plan(pipe, plan: MemoryPlan, use: Use, encoded: bool = True) -> None:
    """Apply a plan's non-loading parts to a loaded pipeline.

    VAE slicing and tiling for decode; with `encoded` (the outputs are cached), the encoders leave
    the GPU when the plan says so: the VAE too for training, never for generation (it decodes).
    Gradient checkpointing and the optimizer belong to the trainer: `plan.gradient_checkpointing`,
    `adamw(...)`.
    """
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}, got {use!r}")
    vae = pipe.vae
    if hasattr(vae, "enable_slicing"):  # AutoencoderKL; the toy world's codec has nothing to slice
        vae.enable_slicing() if plan.vae_slicing else vae.disable_slicing()
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if plan.vae_tiling else vae.disable_tiling()
    if encoded and plan.offload_encoders:
        offload_encoders(pipe, include_vae=plan.offload_vae and use != "generate")


def adamw(params: Iterable, plan: MemoryPlan, lr: float, weight_decay: float, eight_bit: bool | None = None):
    """AdamW over the trainable (fp32 LoRA) parameters or parameter groups: 8-bit state when the plan says so,
    or when `eight_bit` (an explicit choice) says so."""
    params = list(params)
    if plan.adam_8bit if eight_bit is None else eight_bit:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
