"""`StoryFluxPipeline`: FLUX.1 with Group-Shared Attention, loaded and called like any diffusers pipeline.

    pipe = StoryFluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16)
    pipe.to("cuda")
    pipe.load_lora_weights("runs/stage1/lora")   # a storyloop Stage-1 LoRA
    pipe.load_lora_weights("runs/dpo/lora")      # and the DPO LoRA trained over it
    image = pipe("Mia reads a book", references={"Mia": ["mia.png"]},
                 generator=torch.Generator().manual_seed(0)).images[0]

A call samples exactly as `storyloop generate run` does (generation/run.py): the references are encoded
once (`encode_references`), their K/V written once with the DPO adapter off (`reference_cache`) and read at
every step of the one sampler (`sampling.sample`), then decoded one image at a time. Noise is drawn per image
from its CPU generator as `initial_noise` draws it, so a generator seeded with s gives the image of seed s:
pixel for pixel when the images are denoised in the same batches (a call's images together; generate run's
--batch-size candidates of a scenario together), else up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput
from PIL import Image
from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection,
                          T5EncoderModel, T5TokenizerFast)

from storyloop.characters import Slot, slots
from storyloop.db.assets import ImageError, inspect_image
from storyloop.generation.flux import TextEmbeds
from storyloop.generation.gsa import install_gsa
from storyloop.generation.lora import check_dpo_parent, load_lora
from storyloop.generation.models import (LoraMeta, ModelError, base_identity, decode_tokens, encode_text,
                                         latent_grid, load_flux)
from storyloop.generation.run import encode_references, reference_cache
from storyloop.generation.sampling import sample
from storyloop.hashing import sha256_path

KINDS = ("stage1", "dpo")  # storyloop LoRAs, in the order they stack; each loads as the adapter of its name
OUTPUT_TYPES = ("pil", "np", "latent")

ImageLike = Image.Image | str | Path
ReferenceInput = Sequence[ImageLike] | Mapping[str, Sequence[ImageLike]]


class StoryFluxPipeline(FluxPipeline):
    """diffusers' FluxPipeline with GSA processors on every attention layer and storyloop's LoRA checks."""

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, text_encoder_2: T5EncoderModel, tokenizer_2: T5TokenizerFast,
                 transformer: FluxTransformer2DModel, image_encoder: CLIPVisionModelWithProjection = None,
                 feature_extractor: CLIPImageProcessor = None):
        # The signature is FluxPipeline's: diffusers reads a pipeline's components from it.
        super().__init__(scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, transformer,
                         image_encoder, feature_extractor)
        install_gsa(self.transformer)  # with no references a GSA processor is stock FLUX attention
        if hasattr(self.vae, "enable_slicing"):  # decode one image at a time, as generate run does by default
            self.vae.enable_slicing()  # (a batched decode may move a pixel's last bit)
        self.storyloop_loras: dict[str, tuple[Path, str]] = {}  # kind -> (folder, sha256), in load order

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, torch_dtype: torch.dtype | None = None,
                        quantization: str | None = None, device: str | torch.device = "cpu",
                        **kwargs) -> StoryFluxPipeline:
        """A FLUX.1 folder or hub id, through storyloop's loader (`models.load_flux`): a folder must hold a
        FLUX.1 transformer, the storyloop components it names (the toy world's codec) are imported, float16
        is refused. `quantization` (none, nf4, int8, fp8) stores the transformer's weights in that format."""
        dtype = kwargs.pop("dtype", None) or torch_dtype or torch.float32
        return load_flux(str(pretrained_model_name_or_path), dtype=dtype, device=device, quantization=quantization,
                         pipeline_class=cls, **kwargs)

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict: str | Path,
                          adapter_name: str | None = None) -> None:
        """Load a storyloop Stage-1 or DPO LoRA folder (its kind is read from storyloop_lora.json) as the
        adapter of that name, and make the loaded ones active (stage1, then dpo).

        Refused with a ModelError, before any weight is loaded: a folder without storyloop metadata, a LoRA
        made for another base model or GSA position scheme, a kind already loaded, a DPO LoRA trained over
        another Stage-1 LoRA than the one loaded (or loaded before its Stage-1 LoRA)."""
        if not isinstance(pretrained_model_name_or_path_or_dict, (str, Path)):
            raise ModelError("StoryFluxPipeline loads storyloop LoRA folders only (a path, not a state dict)")
        folder = Path(pretrained_model_name_or_path_or_dict).expanduser()
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such LoRA folder")
        kind = LoraMeta.read(folder).kind
        if kind not in KINDS:
            raise ModelError(f"{folder}: a {kind!r} LoRA is none of storyloop's kinds ({', '.join(KINDS)})")
        if adapter_name not in (None, kind):
            # the reference pass switches the DPO adapter off by its name (run.reference_cache)
            raise ModelError(f"{folder}: a storyloop {kind} LoRA loads as adapter {kind!r}, not {adapter_name!r}")
        if kind in self.storyloop_loras:
            raise ModelError(f"{folder}: a {kind} LoRA is already loaded ({self.storyloop_loras[kind][0]})")
        if kind == "stage1" and "dpo" in self.storyloop_loras:
            raise ModelError(f"{folder}: load the Stage-1 LoRA before the DPO LoRA trained over it")
        if not self.name_or_path:
            raise ModelError("this pipeline was not loaded from a folder or hub id, so a LoRA's base model cannot "
                             "be checked: build it with StoryFluxPipeline.from_pretrained")
        base = base_identity(self.name_or_path)
        if kind == "dpo":  # checked before any weight is loaded
            stage1 = self.storyloop_loras.get("stage1")
            check_dpo_parent(LoraMeta.read(folder), folder, stage1[1] if stage1 else None,
                             f"this pipeline ({stage1[0]})" if stage1 else "this pipeline (none loaded)")
        load_lora(self, folder, kind, base, kind)
        self.storyloop_loras[kind] = (folder, sha256_path(folder))
        self.transformer.set_adapters(list(self.storyloop_loras))
        self.transformer.requires_grad_(False)  # set_adapters makes the active adapters trainable again

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], references: ReferenceInput | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 3.5,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 reference_guidance_scale: float = 1.0, height: int | None = None, width: int | None = None,
                 num_images_per_prompt: int = 1, output_type: str = "pil", max_sequence_length: int = 512,
                 return_dict: bool = True) -> FluxPipelineOutput | tuple:
        """Images of `prompt` (num_images_per_prompt each) with GSA over `references`.

        references: images or image paths (one unnamed character), or a mapping character name -> images; slot
            order is the order written (storyloop.characters.slots). None or empty: stock FLUX sampling.
        generator: one per image (image i of the call draws from generator i), or one for all (drawn from in
            turn), or None (torch's global generator). A CPU generator seeded with s gives seed s's image of
            `storyloop generate run`.
        reference_guidance_scale: 1 is the paper's sampler; 0 samples without the references; any other value
            is guidance over them, at twice the cost (generation/sampling.py).
        output_type: "pil", "np" (float arrays in [0, 1], [B, H, W, 3]) or "latent" (packed latent tokens).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        if not prompts or num_images_per_prompt < 1 or num_inference_steps < 1:
            raise ValueError("need at least one prompt, one image per prompt and one inference step")
        if reference_guidance_scale < 0:
            raise ValueError(f"reference_guidance_scale must be at least 0, got {reference_guidance_scale}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        grid = latent_grid(self, height, width)
        seeds = _generators(generator, len(prompts) * num_images_per_prompt)
        images = reference_images(references)

        # Encode: each prompt as generate run encodes a scenario's (one row, repeated per image).
        rows = [encode_text(self, [p], max_sequence_length).expand(num_images_per_prompt) for p in prompts]
        text = rows[0] if len(rows) == 1 else TextEmbeds(torch.cat([r.prompt_embeds for r in rows]),
                                                         torch.cat([r.pooled for r in rows]))
        refs = encode_references(self, images, (width, height), max_sequence_length) if images else None
        # Write the references' K/V once (Stage-1 model only), unless s = 0 samples without them.
        cache = reference_cache(self, refs, guidance_scale) if refs is not None and reference_guidance_scale else None
        with self.progress_bar(total=num_inference_steps) as bar:
            tokens = sample(self.transformer, self.scheduler, text, grid, seeds, refs, num_inference_steps,
                            guidance_scale, reference_cache=cache, reference_guidance_scale=reference_guidance_scale,
                            on_step=lambda _: bar.update())
        if output_type == "latent":
            out = tokens
        else:
            out = decode_tokens(self, tokens, grid)
            if output_type == "np":
                out = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in out])
        self.maybe_free_model_hooks()
        return FluxPipelineOutput(images=out) if return_dict else (out,)


def _generators(generator, count: int) -> list:
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"{len(generator)} generators for {count} images: pass one per image, or one for all")
        return list(generator)
    return [generator] * count


def reference_images(references: ReferenceInput | None) -> list[Image.Image]:
    """The references as images, in slot order (storyloop.characters.slots)."""
    return [open_reference(s, i) for i, s in enumerate(slots(references))]


def open_reference(slot: Slot, index: int) -> Image.Image:
    """A reference slot's image, read whole (the file is closed again)."""
    if isinstance(slot.item, Image.Image):
        return slot.item
    check_reference(slot, index)
    image = Image.open(slot.item)
    image.load()
    return image


def check_reference(slot: Slot, index: int) -> None:
    """A PIL image, or the path of a readable image: else a ValueError naming the file and its character."""
    item = slot.item
    if isinstance(item, Image.Image):
        return
    if not isinstance(item, (str, Path)):
        raise TypeError(f"reference {index}: expected a PIL image or a path, got {type(item).__name__}")
    who = f" of {slot.character!r}" if slot.character is not None else ""
    try:
        inspect_image(Path(item))  # decodes it fully: a truncated file fails here, with its name
    except ImageError as exc:
        raise ImageError(f"reference{who} {exc}") from None
