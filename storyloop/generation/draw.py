"""Drawing without a database: `storyloop sample` (one prompt) and `storyloop story` (every frame of a file).

Both load a `StoryFluxPipeline` with a Stage-1 (and DPO) LoRA in the memory mode `generate run` uses and
draw each image through it, so a seed gives the image `generate run` gives for that seed. Every reference is
checked before the model loads; every PNG is written whole (a temporary file, then a rename) and says how it
was drawn in a `storyloop` text chunk (`drawn_with`): prompt, seed, references' hashes, model, LoRAs' hashes,
sampler settings. `story --resume` skips the frames whose PNGs say they were drawn exactly as asked now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from storyloop.characters import MAX_NAME, Slot, grouped
from storyloop.data.cache import atomic_write, png_bytes
from storyloop.generation.config import DrawConfig
from storyloop.generation.errors import DrawError
from storyloop.generation.fingerprint import base_fingerprint
from storyloop.generation.memory import MemoryPlan, apply_memory_plan, check_dtype
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.pipeline import StoryFluxPipeline, check_reference, open_reference
from storyloop.generation.run import candidate_seed
from storyloop.generation.training import memory_plan
from storyloop.hashing import sha256_path
from storyloop.provenance import code_version
from storyloop.stories import StoryError, StoryFrame

PNG_KEY = "storyloop"  # the PNG text chunk with how the image was drawn


@dataclass(frozen=True)
class ModelChoice:
    """What draws: a base model and the storyloop LoRAs loaded over it."""

    model: str  # FLUX folder or hub id
    stage1_lora: Path | None = None
    dpo_lora: Path | None = None


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _plan(choice: ModelChoice, config: DrawConfig, refs: int):
    return memory_plan(config.memory, config.quantization, choice.model, "generate", device(),
                       Workload(config.height, config.width, refs, config.num_images, 16, config.max_sequence_length))


def load_pipeline(choice: ModelChoice, config: DrawConfig, refs: int, dtype=None) -> StoryFluxPipeline:
    """The pipeline with its LoRAs, in `config.memory` mode; `dtype` None: bfloat16 on a GPU, float32 on a CPU.
    `refs`: the most references of one image (a mode the GPU cannot hold is refused before loading)."""
    plan = _plan(choice, config, refs)
    dtype = plan.torch_dtype if dtype is None else dtype
    check_dtype(dtype)
    pipe = StoryFluxPipeline.from_pretrained(choice.model, torch_dtype=dtype, quantization=plan.quantization,
                                             device=device())
    for lora in (choice.stage1_lora, choice.dpo_lora):
        if lora is not None:
            pipe.load_lora_weights(lora)
    # VAE slicing/tiling as generate run decodes; the encoders stay where they are (the pipeline encodes
    # each call's prompts itself).
    apply_memory_plan(pipe, plan, "generate", encoded=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def drawn_with(choice: ModelChoice, config: DrawConfig, plan: MemoryPlan, dtype) -> dict:
    """What decides a run's pixels besides each image's prompt, references and seed: the base model's weights
    identity (`base_fingerprint`), the LoRAs' content hashes, every knob of `config`, what the memory plan made
    of them here (device, quantization, VAE slicing and tiling) and the weights' dtype (and, for the record
    only, the model as given and storyloop's version)."""
    return {"model": choice.model, "model_fingerprint": base_fingerprint(choice.model),
            "stage1_lora_sha256": sha256_path(choice.stage1_lora) if choice.stage1_lora is not None else None,
            "dpo_lora_sha256": sha256_path(choice.dpo_lora) if choice.dpo_lora is not None else None,
            **asdict(config), "device": plan.device_type, "quantized": plan.quantization,
            "vae_slicing": plan.vae_slicing, "vae_tiling": plan.vae_tiling,
            "dtype": str(dtype).removeprefix("torch."), "code_version": code_version()}


def reference_hashes(references: list[Slot], known: dict | None = None) -> list[dict]:
    """Each reference's character and content hash, in slot order (a file's bytes, a PIL image's pixels);
    `known` keeps a file's hash for the next frame that uses it."""
    known = {} if known is None else known

    def digest(item) -> str:
        if isinstance(item, Image.Image):
            return hashlib.sha256(f"{item.mode} {item.size}\n".encode() + item.tobytes()).hexdigest()
        if item not in known:
            known[item] = sha256_path(item)
        return known[item]

    return [{"character": slot.character, "sha256": digest(slot.item)} for slot in references]


def image_record(run: dict, prompt: str, references: list[dict], seed: int, **where) -> dict:
    """One PNG's `storyloop` text: the run's `drawn_with`, its prompt, `reference_hashes` and seed, and where it
    belongs (story id, frame index, k)."""
    return {**run, **where, "prompt": prompt, "references": references, "seed": seed}


def read_record(path: Path) -> dict | None:
    """The `storyloop` text of a PNG written here; None for a missing file, another PNG or a damaged one (every
    chunk's checksum is verified; the pixels are not decoded)."""
    try:
        with Image.open(path) as image:
            text = image.info[PNG_KEY]  # the text chunks come before the pixels: read at open
            image.verify()
        return json.loads(text)
    except (OSError, KeyError, ValueError, SyntaxError):  # (Pillow reports a bad chunk as a SyntaxError)
        return None


RECORD_ONLY = ("model", "code_version")  # kept in a PNG's record, not compared: a moved model folder or a fix
# between a crash and the resume does not redraw a finished story


def _same_drawing(a: dict | None, b: dict) -> bool:
    """Whether a PNG's record asks for the same pixels as `b`."""
    return a is not None and {k: v for k, v in a.items() if k not in RECORD_ONLY} == {
        k: v for k, v in b.items() if k not in RECORD_ONLY}


def _png(image: Image.Image, record: dict) -> bytes:
    return png_bytes(image, {PNG_KEY: json.dumps(record, sort_keys=True)})


def _draw(pipe: StoryFluxPipeline, prompt: str, images: list, seeds: list[int], config: DrawConfig) -> list:
    return pipe(prompt, references=images, num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                reference_guidance_scale=config.reference_guidance_scale, height=config.height, width=config.width,
                num_images_per_prompt=len(seeds), max_sequence_length=config.max_sequence_length).images


def sample_seeds(config: DrawConfig) -> list[int]:
    return [config.seed + k for k in range(config.num_images)]


def parse_refs(items: list[str]) -> list[Slot[Path]]:
    """`--ref` values as slots: NAME=IMAGE is one of NAME's images, a bare IMAGE an unnamed reference. Slot
    order is a scenarios file's: names (and the unnamed) in order of first appearance, each one's images in
    the order given. A value that is an existing file is a bare IMAGE even if it holds '='."""
    out: list[Slot[Path]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or Path(item).is_file():
            out.append(Slot(None, Path(item)))
            continue
        if not name.strip() or not path.strip() or len(name) > MAX_NAME:
            raise DrawError(f"--ref {item!r}: expected NAME=IMAGE (a name of 1 to {MAX_NAME} characters) or IMAGE")
        out.append(Slot(name.strip(), Path(path)))
    return [Slot(name, p) for name, paths in grouped(out).items() for p in paths]


def check_references(references: list[Slot]) -> None:
    for i, slot in enumerate(references):
        check_reference(slot, i)


def draw_prompt(choice: ModelChoice, prompt: str, references: list[Slot[Path]], config: DrawConfig, out: Path,
                dtype=None) -> list[Path]:
    """`config.num_images` images of `prompt`, image k with seed `config.seed + k`, as OUT/seed-<seed>.png."""
    if not prompt.strip():
        raise DrawError("the prompt is empty")
    check_references(references)  # a missing or broken file fails before the model loads
    plan = _plan(choice, config, len(references))
    dtype = plan.torch_dtype if dtype is None else dtype
    pipe = load_pipeline(choice, config, len(references), dtype)
    run = drawn_with(choice, config, plan, dtype)  # after the load: a hub model's identity needs it in the local cache
    seeds = sample_seeds(config)
    drawn = _draw(pipe, prompt, _open(references), seeds, config)
    refs = reference_hashes(references)
    return [atomic_write(Path(out) / f"seed-{s}.png", _png(im, image_record(run, prompt, refs, s)))
            for s, im in zip(seeds, drawn)]


def frame_seed(seed: int, story_id: str, frame_index: int, k: int) -> int:
    """Image k of a frame: the first 63 bits of sha256 of (seed, "story:" + story id, frame index, k), as
    generate run derives its candidates' seeds; stable whatever the file's order or its other frames."""
    return candidate_seed(seed, f"story:{story_id}", str(frame_index), k)


def frame_paths(frame: StoryFrame, out: Path, n: int) -> list[Path]:
    return [Path(out) / frame.story_id / f"{frame.frame_index}_{k}.png" for k in range(n)]


def check_frames(frames: list[StoryFrame]) -> None:
    """Every story id must be a folder name, and no two frames may share a story id and frame index (they would
    write the same files)."""
    seen: dict[tuple[str, int], str] = {}
    for f in frames:
        sid = f.story_id
        if sid in (".", "..") or any(c in sid for c in "/\\\0") or sid != sid.strip():
            raise StoryError(f"{f.where}: story id {sid!r} cannot be a folder name (no slashes, not . or ..)")
        key = (sid, f.frame_index)
        if key in seen:
            raise StoryError(f"{f.where}: story {sid!r} frame {f.frame_index} is also {seen[key]}")
        seen[key] = f.where


def draw_story(choice: ModelChoice, frames: list[StoryFrame], config: DrawConfig, out: Path, dtype=None,
               progress: bool = True, on_image: Callable[[Path], None] | None = None,
               resume: bool = False) -> list[Path]:
    """Every frame's `config.num_images` images as OUT/<story id>/<frame index>_<k>.png (k from 0), image k of
    a frame with seed `frame_seed(config.seed, story id, frame index, k)`; the paths written. All frames and
    references are checked before the model loads.

    `resume`: a frame whose every PNG is there and says it was drawn exactly as asked now (`drawn_with`, prompt,
    references, seed) is skipped; any other is drawn whole (a frame's images are denoised in one batch)."""
    check_frames(frames)
    for f in frames:  # a missing or broken reference fails here, named with its frame
        try:
            check_references(f.references)
        except ValueError as exc:
            raise StoryError(f"{f.where}: {exc}") from None
    most_refs = max((len(f.references) for f in frames), default=0)
    plan = _plan(choice, config, most_refs)
    dtype = plan.torch_dtype if dtype is None else dtype
    run = drawn_with(choice, config, plan, dtype)
    todo, known = [], {}
    for f in frames:
        refs = reference_hashes(f.references, known)
        images = [image_record({}, f.prompt, refs, frame_seed(config.seed, f.story_id, f.frame_index, k),
                               story_id=f.story_id, frame_index=f.frame_index, k=k) for k in range(config.num_images)]
        paths = frame_paths(f, out, config.num_images)
        if not (resume and all(_same_drawing(read_record(p), {**run, **i}) for p, i in zip(paths, images))):
            todo.append((f, paths, images))
    written: list[Path] = []
    if not todo:
        return written
    pipe = load_pipeline(choice, config, most_refs, dtype)
    run = drawn_with(choice, config, plan, dtype)  # again: a hub model not in the cache before has its identity now
    with tqdm(total=len(todo) * config.num_images, unit="img", desc="story", disable=not progress) as bar:
        for f, paths, images in todo:
            drawn = _draw(pipe, f.prompt, _open(f.references), [i["seed"] for i in images], config)
            for path, image, own in zip(paths, drawn, images):
                written.append(atomic_write(path, _png(image, {**run, **own})))
                if on_image is not None:
                    on_image(path)
                bar.update(1)
    return written


def _open(references: list[Slot]) -> list:
    """The images in slot order (the pipeline takes them as a flat list: only their order matters to GSA)."""
    return [open_reference(slot, i) for i, slot in enumerate(references)]
