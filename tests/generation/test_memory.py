"""Memory modes: what each resolves to on a CPU and on CUDA, what they do to a pipeline, and fp16 refused
wherever a dtype is chosen (load_flux is covered in test_quantized.py)."""

import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import storyloop.toy

from storyloop.cli.main import app
from storyloop.dpo.config import DPOConfig
from storyloop.generation.config import Stage1Config
from storyloop.generation.memory import (FP16_REASON, MODES, QUANTIZATION_CHOICES, adamw, apply_memory_plan,
                                         check_dtype, resolve)
from storyloop.generation.models import ModelError, load_flux
from storyloop.generation.tiny import tiny_flux_pipeline

TOY_BASE = Path(storyloop.toy.__file__).parent / "weights" / "base"


def test_modes_resolve_to_bf16_and_their_savings_on_cuda_and_to_plain_fp32_on_a_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # 8-bit Adam only where bitsandbytes imports
    small = resolve("24gb", "cuda:1")
    assert (small.dtype, small.quantization, small.offload_encoders, small.offload_vae) == ("bfloat16", "nf4", True,
                                                                                          True)
    assert small.gradient_checkpointing and small.vae_slicing and small.vae_tiling and not small.adam_8bit
    assert resolve("80gb", "cuda").quantization == "none" and resolve("80gb", "cuda").gradient_checkpointing
    full = resolve("full", "cuda")
    assert not (full.offload_encoders or full.gradient_checkpointing or full.vae_slicing)
    cpu = resolve("24gb", "cpu")
    assert (cpu.dtype, cpu.quantization, cpu.offload_encoders, cpu.adam_8bit) == ("float32", "none", False, False)
    assert cpu.torch_dtype == torch.float32 and small.torch_dtype == torch.bfloat16
    # An explicit quantisation overrides the mode's, on any device; "auto" keeps the mode's.
    assert resolve("24gb", "cpu", "int8").quantization == "int8"
    assert resolve("24gb", "cuda", "fp8").quantization == "fp8"
    assert resolve("24gb", "cuda", "auto").quantization == "nf4"
    assert type(adamw([torch.nn.Parameter(torch.zeros(2))], small, 1e-4, 0.0)) is torch.optim.AdamW
    assert set(MODES) == {"full", "80gb", "24gb"} and QUANTIZATION_CHOICES == ("auto", "none", "nf4", "int8", "fp8")


def test_unknown_mode_or_quantization_is_one_line():
    with pytest.raises(ModelError, match=r"^memory mode '16gb' is not one of full, 80gb, 24gb$"):
        resolve("16gb", "cuda")
    with pytest.raises(ModelError, match=r"^quantization 'nf8' is not one of auto, none, nf4, int8, fp8$"):
        resolve("24gb", "cuda", "nf8")


def test_a_plan_sets_vae_slicing_and_tiling_and_keeps_everything_on_a_cpu():
    pipe = tiny_flux_pipeline(["a", "fox"])
    apply_memory_plan(pipe, resolve("24gb", "cpu"), "stage1")
    assert pipe.vae.use_slicing and pipe.vae.use_tiling
    apply_memory_plan(pipe, resolve("full", "cpu"), "generate")
    assert not (pipe.vae.use_slicing or pipe.vae.use_tiling)
    assert {p.device.type for p in pipe.text_encoder_2.parameters()} == {"cpu"}
    with pytest.raises(ValueError, match="use must be one of stage1, dpo, generate"):
        apply_memory_plan(pipe, resolve("full", "cpu"), "train")
    toy = load_flux(str(TOY_BASE))  # the toy world's VAE-interface codec has nothing to slice or tile
    apply_memory_plan(toy, resolve("24gb", "cpu"), "generate")


@pytest.mark.parametrize("dtype", [torch.float16, "float16", "torch.float16", "fp16", "half"])
def test_float16_is_refused_by_every_spelling(dtype):
    with pytest.raises(ModelError, match="overflow"):
        check_dtype(dtype)
    check_dtype(torch.bfloat16)
    check_dtype("float32")


@pytest.mark.parametrize("config", [Stage1Config, DPOConfig])
def test_mixed_precision_fp16_is_refused_with_the_reason(config):
    refused = rf"^mixed_precision=fp16 is refused: {re.escape(FP16_REASON)}; use bf16 \(or no\)$"
    with pytest.raises(ValueError, match=refused):
        config.from_sources(None, mixed_precision="fp16")
    with pytest.raises(ValueError, match=r"^mixed_precision must be one of auto, no, bf16 \(got 'fp8'\)$"):
        config(mixed_precision="fp8")
    assert config(mixed_precision="bf16").mixed_precision == "bf16"


def test_generate_run_refuses_float16_before_opening_anything(tmp_path):
    result = CliRunner().invoke(app, ["generate", "run", "--round", "r1", "--dtype", "float16",
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "--dtype float16 is refused: FLUX activations overflow in float16" in " ".join(result.output.split())
    assert not (tmp_path / "data").exists()
