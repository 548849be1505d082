"""Loading FLUX.1 and moving between images, prompts and the transformer's packed tokens."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, FluxPipeline, FluxTransformer2DModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers.utils import logging as hf_logging

from storyloop.generation.buckets import fit_image
from storyloop.generation.errors import ModelError  # noqa: F401  (callers import it from here)
from storyloop.generation.fingerprint import base_fingerprint, base_identity, looks_like_path  # noqa: F401
from storyloop.generation.flux import TextEmbeds, pack_latents, unpack_latents


hf_logging.set_verbosity_error()  # transformers' import-time notices are noise for our users


FLUX_TRANSFORMER = "FluxTransformer2DModel"


@contextmanager
def loading_bars() -> Iterator[None]:
    """One progress bar while a pipeline loads: diffusers' over its components, on the first process of a
    machine only; transformers' per-encoder weight bars, nested inside it, never."""
    hf_logging.disable_progress_bar()
    quiet = int(os.environ.get("LOCAL_RANK", "0")) != 0
    if quiet:
        diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if quiet:
            diffusers_logging.enable_progress_bar()


def _check_flux_folder(folder: Path) -> dict:
    """A diffusers folder whose pipeline has a FLUX.1 transformer, or a one-line error naming what it is."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(f"{folder}: not a diffusers FLUX folder (no model_index.json)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{index_path}: unreadable ({exc})") from None
    transformer = index.get("transformer") if isinstance(index, dict) else None
    if not (isinstance(transformer, list) and transformer[-1:] == [FLUX_TRANSFORMER]):
        kind = index.get("_class_name", "an unknown pipeline") if isinstance(index, dict) else "not a pipeline"
        raise ModelError(f"{folder}: not a FLUX.1 model: model_index.json names {kind} "
                         f"(transformer {transformer!r}), storyloop needs a {FLUX_TRANSFORMER}")
    return index


def _import_own_components(index: dict) -> bool:
    """Import the storyloop modules a model folder names for its components (the toy world's codec).

    diffusers loads a component only from a library it knows or a module already imported; storyloop's
    own modules are its code, not the folder's, so importing them runs nothing the user did not install.
    Whether any was found (diffusers then warns that the component is not the type FluxPipeline names).
    """
    own = [entry[0] for entry in index.values() if isinstance(entry, list) and len(entry) == 2
           and isinstance(entry[0], str) and entry[0].split(".")[0] == "storyloop"]
    for module in own:
        importlib.import_module(module)
    return bool(own)


@contextmanager
def _own_component_types(quiet: bool) -> Iterator[None]:
    """diffusers warns 'Expected types for vae ...' when a component is not the class FluxPipeline names; the
    toy world's codec answers the same interface on purpose. Other warnings stay."""
    logger = diffusers_logging.get_logger("diffusers.pipelines.pipeline_utils")
    level = logger.level
    if quiet:
        logger.setLevel(diffusers_logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_flux(spec: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              quantization: str | None = None, pipeline_class: type[FluxPipeline] = FluxPipeline,
              **kwargs) -> FluxPipeline:
    """A FluxPipeline from a local diffusers-format folder, or a hub id (e.g. FLUX.1-dev).

    `quantization` (none, nf4, int8, fp8: see storyloop.generation.memory) stores the frozen
    transformer's linear weights in that format through diffusers' quantisation configs; the text
    encoders and the VAE load in `dtype`. float16 is refused (FLUX overflows in it).
    `pipeline_class` is what is built (a FluxPipeline subclass: `StoryFluxPipeline` loads through here);
    `kwargs` go on to diffusers' `from_pretrained` (revision, local_files_only, ...).
    """
    from storyloop.generation.memory import check_dtype, quantization_config

    check_dtype(dtype)
    qconfig = quantization_config(quantization or "none", dtype, device)  # a missing backend: one line
    if looks_like_path(spec):
        folder = Path(spec).expanduser()
        own = _import_own_components(_check_flux_folder(folder))
        source = str(folder)
    else:
        source, own = spec, False
    try:
        components = {}
        if qconfig is not None:
            # Quantise where the model will run: bitsandbytes places weights on the GPU as it loads.
            placement = {"device_map": {"": str(device)}} if str(device) != "cpu" else {}
            components["transformer"] = FluxTransformer2DModel.from_pretrained(
                source, subfolder="transformer", quantization_config=qconfig, torch_dtype=dtype, **placement)
        with loading_bars(), _own_component_types(own):
            pipe = _diffusers_from_pretrained(pipeline_class, source, dtype=dtype, **components, **kwargs)
    except Exception as exc:  # diffusers raises many kinds; the user needs one line naming the model
        raise ModelError(f"cannot load FLUX model {spec!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from exc
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.eval().requires_grad_(False)
    return pipe.to(device)


def _diffusers_from_pretrained(pipeline_class: type[FluxPipeline], source: str, **kwargs) -> FluxPipeline:
    """diffusers' own loader building `pipeline_class`, also when that class's `from_pretrained` leads here."""
    return DiffusionPipeline.from_pretrained.__func__(pipeline_class, source, **kwargs)


@torch.no_grad()
def encode_text(pipe: FluxPipeline, prompts: list[str], max_sequence_length: int = 512) -> TextEmbeds:
    device = pipe.transformer.device
    prompt_embeds, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, device=device,
                                                  max_sequence_length=max_sequence_length)
    return TextEmbeds(prompt_embeds.float(), pooled.float())


def size_factor(pipe: FluxPipeline) -> int:
    """Image sides must be multiples of this: the VAE's downsampling, then FLUX's 2x2 token packing (16)."""
    return pipe.vae_scale_factor * 2


def latent_grid(pipe: FluxPipeline, height: int, width: int) -> tuple[int, int]:
    """Token grid (h, w) of an image of height x width pixels: VAE factor, then 2x2 packing."""
    f = size_factor(pipe)
    if height % f or width % f:
        raise ModelError(f"image size {width}x{height} must be a multiple of {f} for this model")
    return height // f, width // f


@torch.no_grad()
def encode_images(pipe: FluxPipeline, images: list[Image.Image], size: tuple[int, int]) -> torch.Tensor:
    """Packed clean latent tokens [n, L, C] of images brought to `size` = (width, height).

    An image of another aspect ratio is resized to cover `size` and centre-cropped, never stretched
    (see generation/buckets.py); one of the same aspect ratio is only resized.
    """
    vae = pipe.vae
    arr = np.stack([np.asarray(fit_image(im, size), dtype=np.float32) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).div(127.5).sub(1.0).to(vae.device, vae.dtype)
    latents = vae.encode(x).latent_dist.mode()  # the mean: the cached latent is deterministic
    latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    return pack_latents(latents.float())


@torch.no_grad()
def decode_tokens(pipe: FluxPipeline, tokens: torch.Tensor, grid: tuple[int, int]) -> list[Image.Image]:
    vae = pipe.vae
    latents = unpack_latents(tokens, grid[0] * 2, grid[1] * 2)
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    x = vae.decode(latents.to(vae.dtype)).sample.float()
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


@dataclass(frozen=True)
class LoraMeta:
    """The record saved beside a storyloop LoRA (storyloop_lora.json)."""

    kind: str  # "stage1" or "dpo"
    base: str  # base_fingerprint of the model it was trained on (older LoRAs: "sha256:…" or "hub:…")
    position_scheme: str
    rank: int
    alpha: int
    steps: int
    extra: dict | None = None

    def dump(self, folder: Path) -> None:
        (Path(folder) / META_FILE).write_text(json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> LoraMeta:
        path = Path(folder) / META_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise ModelError(f"{folder}: not a storyloop LoRA folder (no {META_FILE})") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable LoRA metadata ({exc})") from None


META_FILE = "storyloop_lora.json"
