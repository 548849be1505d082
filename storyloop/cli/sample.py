"""`storyloop sample` and `storyloop story`: draw with GSA from files, without a database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.common import fail
from storyloop.cli.generate import torch_dtype
from storyloop.generation.config import DrawConfig
from storyloop.stories import READERS

D, H = DrawConfig.default, DrawConfig.help

ModelOpt = Annotated[str, typer.Option(help="FLUX.1 folder (diffusers format) or hub id.")]
Stage1Opt = Annotated[Path, typer.Option("--stage1-lora", help="Stage-1 LoRA folder (storyloop_lora.json beside "
                                                               "the weights); checked against the base model.")]
DpoOpt = Annotated[Path | None, typer.Option("--dpo-lora", help="DPO LoRA folder, trained over that Stage-1 LoRA "
                                                                "(refused otherwise).")]
OutOpt = Annotated[Path, typer.Option(help="Folder the PNGs go to (created; files of the same name are replaced).")]
StepsOpt = Annotated[int, typer.Option(min=1, help=H("num_inference_steps"))]
GuidanceOpt = Annotated[float, typer.Option(help=H("guidance_scale"))]
HeightOpt = Annotated[int, typer.Option(help=H("height"))]
WidthOpt = Annotated[int, typer.Option(help=H("width"))]
RefScaleOpt = Annotated[float, typer.Option(min=0.0, help=H("reference_guidance_scale"))]
SeqOpt = Annotated[int, typer.Option(help=H("max_sequence_length"))]
DtypeOpt = Annotated[str, typer.Option(help="auto (bfloat16 on a GPU, float32 on a CPU), float32 or bfloat16; "
                                            "float16 overflows in FLUX.")]
MemoryOpt = Annotated[str, typer.Option(help=H("memory"))]
QuantOpt = Annotated[str, typer.Option(help=H("quantization"))]


def _errors():
    from storyloop.db.assets import ImageError
    from storyloop.generation.errors import DrawError, ModelError
    from storyloop.stories import StoryError

    return ModelError, StoryError, DrawError, ImageError


def sample(
    prompt: Annotated[str, typer.Option(help="What to draw.")],
    model: ModelOpt,
    stage1_lora: Stage1Opt,
    out: OutOpt,
    ref: Annotated[list[str] | None, typer.Option(
        "--ref", metavar="[NAME=]IMAGE",
        help="A reference image; repeat it. NAME=IMAGE is one of character NAME's images, a bare IMAGE an "
             "unnamed reference. Slot order: names in order of first appearance, each one's images in the order "
             "given.")] = None,
    dpo_lora: DpoOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the first image; image k gets seed + k (the seed `generate run` "
                                           "records for a candidate redraws it).")] = D("seed"),
    num_images: Annotated[int, typer.Option("-n", "--num-images", min=1, help="Images to draw.")] = D("num_images"),
    steps: StepsOpt = D("num_inference_steps"), guidance: GuidanceOpt = D("guidance_scale"),
    height: HeightOpt = D("height"), width: WidthOpt = D("width"),
    reference_guidance_scale: RefScaleOpt = D("reference_guidance_scale"),
    max_sequence_length: SeqOpt = D("max_sequence_length"), dtype: DtypeOpt = "auto",
    memory: MemoryOpt = D("memory"), quantization: QuantOpt = D("quantization"),
) -> None:
    """Draw one prompt with GSA over reference images; no database.

    Writes OUT/seed-<seed>.png per image and prints each file's path, one line per image.
    """
    from storyloop.generation.draw import ModelChoice, draw_prompt, parse_refs

    weight_dtype = torch_dtype(dtype)
    try:
        config = DrawConfig(num_images, seed, steps, guidance, height, width, reference_guidance_scale,
                            max_sequence_length, memory, quantization)
        written = draw_prompt(ModelChoice(model, stage1_lora, dpo_lora), prompt, parse_refs(ref or []), config, out,
                              weight_dtype)
    except _errors() as exc:
        raise fail(str(exc)) from None
    for path in written:
        print(path)


STORY_EPILOG = (
    "Formats: jsonl, the scenarios file of `storyloop round create --scenarios` (one frame a line: story_id, "
    "frame_index, prompt, references as a list of images or as {name: list of images}; image paths relative to "
    "the file; candidates are ignored). Output: OUT/<story_id>/<frame_index>_<k>.png, k = 0..n-1. Seeds: image k of a "
    "frame gets the first 63 bits of sha256(SEED, 'story:' + story_id, frame_index, k), so a frame draws the same "
    "images whatever the file's order or its other frames. Every frame and reference is checked before the model "
    "loads; an error names the file and line. Each PNG holds how it was drawn as JSON in its 'storyloop' text "
    "chunk; --resume reads it to skip what is done.")


def story(
    file: Annotated[Path, typer.Argument(help="The story file: a round-create JSONL, or a ViStoryBench story.json "
                                              "(or its story folder).", show_default=False)],
    model: ModelOpt,
    stage1_lora: Stage1Opt,
    out: OutOpt,
    dpo_lora: DpoOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help=f"The file's format: {', '.join(READERS)} (default: "
                                                             "from its suffix: .jsonl a scenarios file, .json or a "
                                                             "folder with one a ViStoryBench story.json).")] = None,
    lang: Annotated[str, typer.Option("--lang", help="ViStoryBench text to draw from: en or ch.")] = "en",
    seed: Annotated[int, typer.Option(help="Base seed; every image derives its own (see below).")] = D("seed"),
    num_images: Annotated[int, typer.Option("-n", "--num-images", min=1, help="Images per frame.")] = D("num_images"),
    steps: StepsOpt = D("num_inference_steps"), guidance: GuidanceOpt = D("guidance_scale"),
    height: HeightOpt = D("height"), width: WidthOpt = D("width"),
    reference_guidance_scale: RefScaleOpt = D("reference_guidance_scale"),
    max_sequence_length: SeqOpt = D("max_sequence_length"), dtype: DtypeOpt = "auto",
    memory: MemoryOpt = D("memory"), quantization: QuantOpt = D("quantization"),
    resume: Annotated[bool, typer.Option("--resume", help="Keep the frames whose PNGs in OUT say they were drawn "
                                                          "exactly as asked now (model, LoRAs, settings, prompt, "
                                                          "references, seed); draw the rest.")] = False,
) -> None:
    """Draw every frame of a story file with GSA over its references; no database."""
    from storyloop.generation.draw import ModelChoice, draw_story
    from storyloop.stories import read_story

    weight_dtype = torch_dtype(dtype)
    try:
        config = DrawConfig(num_images, seed, steps, guidance, height, width, reference_guidance_scale,
                            max_sequence_length, memory, quantization)
        frames = read_story(file, fmt, lang)
        written = draw_story(ModelChoice(model, stage1_lora, dpo_lora), frames, config, out, weight_dtype,
                             resume=resume)
    except _errors() as exc:
        raise fail(str(exc)) from None
    kept = len(frames) - len(written) // num_images
    print(f"{len(written)} image(s) of {len(frames) - kept} frame(s) written under {out}"
          + (f"; {kept} frame(s) already drawn as asked, kept" if kept else ""))
