"""FLUX pipelines with random weights, built on the device that will run them and saved as a folder.

The GPU check measures FLUX.1-dev without downloading it: every component is the real class with
the real configuration, only the weights are random, and tokenizers are word vocabularies built in
memory (`storyloop.generation.tiny.word_tokenizer`). Building happens where the model will run, in
the dtype it will run in: FLUX.1-dev's 11.9 B parameters initialised on a CPU in float32 take
minutes and 48 GB; built on the GPU in bfloat16 they are 23.8 GB initialised in place.

Shapes:
  flux1-dev  the transformer, VAE, CLIP-L and T5-XXL configs of black-forest-labs/FLUX.1-dev
             (storyloop.generation.memory_estimate holds them). `t5_layers` can shorten T5 (24 layers,
             4.76 B parameters, 9.5 GB in bf16): the text encoders run once per prompt and leave the
             GPU in the saving modes, but with them on the GPU the encode phase is the 24gb mode's
             peak, so the check keeps the full depth unless told otherwise.
  tiny       the sizes of storyloop.generation.tiny (2 + 2 blocks, 32-wide T5): the CPU smoke.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from storyloop.generation.memory_estimate import FLUX1_CLIP, FLUX1_DEV_TRANSFORMER, FLUX1_T5, FLUX1_VAE

MARKER = "storyloop_random_pipeline.json"  # written last: a folder without it is incomplete


@dataclass(frozen=True)
class PipelineShape:
    """The configs of one FLUX pipeline (diffusers / transformers keyword arguments)."""

    name: str
    transformer: dict
    vae: dict
    t5: dict
    clip: dict
    clip_length: int  # CLIP's max tokens (77 for CLIP-L)
    scheduler: dict = field(default_factory=lambda: dict(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096))  # FLUX.1-dev's FlowMatchEulerDiscreteScheduler


SHAPES = {s.name: s for s in (
    PipelineShape("flux1-dev", FLUX1_DEV_TRANSFORMER,
                  dict(FLUX1_VAE, act_fn="silu", scaling_factor=0.3611, shift_factor=0.1159, force_upcast=True),
                  FLUX1_T5, FLUX1_CLIP, clip_length=77),
    PipelineShape("tiny",
                  dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                       num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
                       axes_dims_rope=(4, 6, 6)),
                  dict(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0,
                       scaling_factor=1.0),
                  dict(vocab_size=0, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2),
                  dict(vocab_size=0, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       max_position_embeddings=16),
                  clip_length=16),
)}


@contextmanager
def building(device, dtype) -> Iterator[None]:
    """Create modules directly on `device` in `dtype` (parameters and buffers)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_transformer(config: dict, device="cpu", dtype=None):
    """A FluxTransformer2DModel with random weights, made on `device` in `dtype` (default float32)."""
    import torch
    from diffusers import FluxTransformer2DModel

    with building(device, dtype or torch.float32):
        return FluxTransformer2DModel(**config)


def build_pipeline(shape: PipelineShape, words: Iterable[str], device="cpu", dtype=None, t5_layers: int | None = None,
                   seed: int = 0):
    """A FluxPipeline of `shape` with random weights on `device`, every part in eval mode.

    The tokenizers know `words` (plus the empty prompt); encoders' vocabularies are the shape's own
    size when it has one (FLUX.1's: the embedding tables weigh what the real ones do), else the
    tokenizer's.
    """
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from storyloop.generation.tiny import word_tokenizer

    dtype = dtype or torch.float32
    words = list(words)
    clip_tokenizer = word_tokenizer(words, shape.clip_length)
    t5_tokenizer = word_tokenizer(words, 512)
    ids = dict(pad_token_id=0, eos_token_id=1)  # word_tokenizer's [PAD] and [EOS]
    t5_cfg = dict(shape.t5, vocab_size=max(shape.t5["vocab_size"], len(t5_tokenizer)), decoder_start_token_id=0, **ids)
    if t5_layers is not None:
        t5_cfg["num_layers"] = t5_layers
    clip_cfg = dict(shape.clip, vocab_size=max(shape.clip["vocab_size"], len(clip_tokenizer)), bos_token_id=1, **ids)
    torch.manual_seed(seed)
    with building(device, dtype):
        transformer = build_transformer(shape.transformer, device, dtype)
        vae = AutoencoderKL(**shape.vae)
        clip = CLIPTextModel(CLIPTextConfig(**clip_cfg))
        t5 = T5EncoderModel(T5Config(**t5_cfg))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**shape.scheduler), vae=vae.eval(),
                        text_encoder=clip.eval(), tokenizer=clip_tokenizer, text_encoder_2=t5.eval(),
                        tokenizer_2=t5_tokenizer, transformer=transformer.eval())
    return pipe


@dataclass(frozen=True)
class FolderRecord:
    """What a saved random pipeline is: reusing a folder needs the same record."""

    shape: str
    dtype: str
    t5_layers: int
    words: list[str]
    seed: int = 0


def save_random_pipeline(folder: Path, shape: PipelineShape, words: Iterable[str], device="cpu", dtype=None,
                         t5_layers: int | None = None, seed: int = 0, log=None) -> tuple[Path, bool]:
    """`folder` holding a random pipeline of `shape` (diffusers format); (folder, False) when an identical one was
    already complete there, (folder, True) when it was built now. The pipeline is freed before returning."""
    import gc

    import torch

    dtype = dtype or torch.float32
    folder = Path(folder)
    words = sorted(set(words))
    record = FolderRecord(shape.name, str(dtype).removeprefix("torch."), t5_layers or shape.t5["num_layers"], words,
                          seed)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == asdict(record):
        return folder, False
    marker.unlink(missing_ok=True)
    pipe = build_pipeline(shape, words, device, dtype, t5_layers, seed)
    if log:
        log(f"built {shape.name} on {device} in {record.dtype}; saving to {folder}")
    pipe.save_pretrained(folder)
    del pipe
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    marker.write_text(json.dumps(asdict(record)))
    return folder, True


def save_random_lora(folder: Path, transformer_config: dict, base: str, rank: int = 16, device="cpu", dtype=None,
                     seed: int = 0) -> Path:
    """A Stage-1 LoRA of `rank` with random non-zero weights for a transformer of `transformer_config`, saved
    for base model `base` (its base_fingerprint). The base itself is built on the meta device: a LoRA file
    needs only the adapters' shapes, so no 12 B parameters are allocated for it."""
    import torch
    from diffusers import FluxTransformer2DModel

    from storyloop.generation.gsa import POSITION_SCHEME
    from storyloop.generation.lora import lora_config, save_lora
    from storyloop.generation.models import LoraMeta

    dtype = dtype or torch.float32
    with torch.device("meta"):
        model = FluxTransformer2DModel(**transformer_config)
    model.add_adapter(lora_config(rank, rank), adapter_name="stage1")
    g = torch.Generator(device).manual_seed(seed)
    for module_name, module in model.named_modules():
        if ".lora_A." in f".{module_name}." or ".lora_B." in f".{module_name}.":
            for name, p in list(module.named_parameters(recurse=False)):
                value = torch.randn(p.shape, generator=g, device=device, dtype=dtype) / p.shape[-1] ** 0.5
                setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    return save_lora(model, "stage1", Path(folder), LoraMeta("stage1", base, POSITION_SCHEME, rank, rank, 1))
