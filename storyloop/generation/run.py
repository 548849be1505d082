"""Generate a round's candidates: K images per scenario, with GSA over the scenario's references.

Idempotent and resumable: each image is committed (store file, then DB row) as soon as it is made,
and a re-run skips every (scenario, index) that already has a candidate, so a crash loses at most
the image in flight. Scenarios are sharded over accelerate processes.

Candidates are made at width x height (multiples of 16 for FLUX). References keep their own aspect
ratio: each is encoded at its bucket of about the candidates' area (generation/buckets.py), never
stretched to the candidates' shape.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from diffusers import FluxPipeline
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from tqdm.auto import tqdm

from storyloop.db import read_scope, session_scope
from storyloop.db.assets import ImageError, asset_path, inspect_bytes, inspect_image, put_image
from storyloop.db.models import Candidate, Round, Scenario
from storyloop.db.rounds import RoundError, get_round
from storyloop.generation.buckets import reference_size
from storyloop.generation.flux import References, TextEmbeds, write_reference_cache
from storyloop.generation.gsa import POSITION_SCHEME, REFERENCE_PROMPT, GSAContext, install_gsa
from storyloop.generation.lora import adapter_off, check_dpo_parent, load_lora
from storyloop.generation.memory import apply_memory_plan, check_dtype, encoders_on
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.models import (ModelError, base_identity, decode_tokens, encode_images, encode_text,
                                         latent_grid, load_flux, size_factor)
from storyloop.generation.training import memory_plan, peak_gb
from storyloop.generation.sampling import sample
from storyloop.hashing import sha256_path
from storyloop.settings import Settings


@dataclass
class GenerateConfig:
    """Knobs of `storyloop generate run`; defaults are the paper's FLUX.1-dev setting."""

    num_candidates: int = 4  # K images per scenario
    num_inference_steps: int = 50
    guidance_scale: float = 3.5  # FLUX.1-dev distilled-guidance embedding
    height: int = 1024
    width: int = 1024
    seed: int = 0  # base seed; each (scenario, index) derives its own
    max_sequence_length: int = 512  # T5 tokens
    use_reference_cache: bool = True
    batch_size: int = 4  # candidates of one scenario denoised together (same images as one at a time)
    # Guidance over the GSA references (see generation/sampling.py), cycled over a scenario's candidates:
    # (1.0,) is the paper's sampler; (1.0, 3.0) makes every other candidate guided, at twice its cost.
    reference_guidance_scales: tuple[float, ...] = (1.0,)
    memory: str = "80gb"  # memory mode (storyloop.generation.memory): full, 80gb or 24gb
    quantization: str = "auto"  # of the frozen transformer: auto (the mode's), none, nf4, int8, fp8

    def __post_init__(self):
        from storyloop.generation.config import MEMORY_MODES, QUANTIZATIONS

        if self.memory not in MEMORY_MODES or self.quantization not in QUANTIZATIONS:
            raise ModelError(f"memory must be one of {', '.join(MEMORY_MODES)} and quantization one of "
                             f"{', '.join(QUANTIZATIONS)} (got {self.memory!r}, {self.quantization!r})")
        if self.num_candidates < 1 or self.num_inference_steps < 1 or self.batch_size < 1:
            raise ValueError("num_candidates, num_inference_steps and batch_size must be at least 1")
        self.reference_guidance_scales = tuple(float(x) for x in self.reference_guidance_scales)
        if not self.reference_guidance_scales or min(self.reference_guidance_scales) < 0:
            raise ValueError("reference_guidance_scales needs at least one scale, none negative")

    def reference_guidance(self, index: int) -> float:
        """The reference-guidance scale of candidate `index`."""
        return self.reference_guidance_scales[index % len(self.reference_guidance_scales)]


@dataclass
class GenerateSummary:
    """What a run did, over all its processes (`processes` of them, each with its share)."""

    generated: int
    skipped: int
    scenarios: int
    seconds: float
    model_fingerprint: str
    processes: int = 1
    peak_gb: float | None = None  # the most GPU memory one process held (None off CUDA)
    memory: str = ""
    quantization: str = ""

    @property
    def s_per_image(self) -> float | None:
        """Wall seconds per generated image, all processes together (encoding and decoding included)."""
        return self.seconds / self.generated if self.generated else None

    def as_json(self) -> dict:
        return {**asdict(self), "s_per_image": self.s_per_image}


def candidate_seed(base_seed: int, round_name: str, scenario_key: str, index: int) -> int:
    """A stable 63-bit seed per candidate, so the same round regenerates the same images."""
    digest = hashlib.sha256(f"{base_seed}\0{round_name}\0{scenario_key}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class LoadedModel:
    pipe: FluxPipeline
    fingerprint: str  # hash of base + LoRAs + GSA scheme: what every candidate records


def load_round_model(rnd: Round, model: str | None = None, dtype=torch.float32, device="cpu",
                     quantization: str = "none", label: str | None = None) -> LoadedModel:
    """The FLUX pipeline a round was created for, with its Stage-1 (and DPO) LoRA checked and loaded.

    `rnd` may be anything with a round's model columns (a study's model arm: then `label` names it)."""
    label = label or f"round {rnd.name!r}"
    spec = model or rnd.base_model
    if not spec:
        raise ModelError(f"{label} records no base model: pass --model")
    pipe = load_flux(spec, dtype=dtype, device=device, quantization=quantization)
    base = base_identity(spec)
    parts = {"base": base.fingerprint, "scheme": POSITION_SCHEME}
    if quantization != "none":  # a quantised base draws (slightly) other images: part of what made them
        parts["quantization"] = quantization
    adapters = []
    for kind, path, sha in (("stage1", rnd.stage1_lora_path, rnd.stage1_lora_sha256),
                            ("dpo", rnd.dpo_lora_path, rnd.dpo_lora_sha256)):
        if not path:
            continue
        if not Path(path).exists():
            raise ModelError(f"{kind} LoRA {path} of {label} is missing")
        if sha256_path(path) != sha:
            raise ModelError(f"{kind} LoRA {path} changed since {label} was created")
        meta = load_lora(pipe, Path(path), kind, base, kind)
        if kind == "dpo":
            check_dpo_parent(meta, path, rnd.stage1_lora_sha256, label)
        adapters.append(kind)
        parts[kind] = sha
    if adapters:
        pipe.transformer.set_adapters(adapters)
    # (generate_round refuses --no-cache with a DPO LoRA: the batch pass would apply it to references.)
    install_gsa(pipe.transformer)
    fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return LoadedModel(pipe, fingerprint)


def _check_references(settings: Settings, scenarios: list[Scenario]) -> None:
    """Every reference image must be in the store and decodable, before anything is generated."""
    for sc in scenarios:
        for ref in sc.references:
            path = asset_path(settings.store_dir, ref.asset)
            try:
                inspect_image(path)
            except ImageError as exc:
                raise RoundError(f"scenario {sc.key!r}: reference {ref.position} unreadable: {exc}") from None


ENCODE_CHUNK = 64  # scenarios whose prompts and references are encoded at once (the encoders visit the GPU once)


def generate_round(settings: Settings, round_name: str, config: GenerateConfig, model: str | None = None,
                   dtype=None, progress: bool = True) -> GenerateSummary:
    """K candidates per scenario of `round_name`; `dtype` None: bfloat16 on a GPU, float32 on a CPU."""
    # PartialState alone ignores ACCELERATE_USE_CPU (only Accelerator reads it), so several CPU processes
    # would each take every scenario.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    with read_scope(settings.db_url) as session:
        rnd = get_round(session, round_name)
        scenarios = list(session.scalars(select(Scenario).where(Scenario.round_id == rnd.id).order_by(Scenario.id)))
        for sc in scenarios:  # load what we need before the session closes
            _ = [r.asset for r in sc.references], [c.index for c in sc.candidates]
        _check_references(settings, scenarios)
    refs = max((len(sc.references) for sc in scenarios), default=0)
    # a mode the GPU cannot hold is refused before anything loads
    plan = memory_plan(config.memory, config.quantization, model or rnd.base_model or "", "generate", state.device,
                       Workload(config.height, config.width, refs, config.batch_size, 16, config.max_sequence_length))
    if dtype is None:
        dtype = plan.torch_dtype
    check_dtype(dtype)
    loaded = load_round_model(rnd, model, dtype=dtype, device=state.device, quantization=plan.quantization)
    rnd_has_dpo = rnd.dpo_lora_path is not None
    pipe, grid = loaded.pipe, latent_grid(loaded.pipe, config.height, config.width)
    if rnd_has_dpo and not config.use_reference_cache:
        raise ModelError("--no-cache is not available with a DPO LoRA: references must go through the "
                         "Stage-1 model only, as in DPO training")
    params = {k: v for k, v in asdict(config).items()
              if k not in ("num_candidates", "seed", "batch_size", "reference_guidance_scales", "memory",
                           "quantization")}
    params.update(position_scheme=POSITION_SCHEME, dtype=str(dtype).removeprefix("torch."),
                  quantization=plan.quantization)
    apply_memory_plan(pipe, plan, "generate")  # VAE slicing/tiling; encoders off the GPU between encodings

    todo = {sc.id: [k for k in range(config.num_candidates) if k not in {c.index for c in sc.candidates}]
            for sc in scenarios}
    mine = scenarios[state.process_index::state.num_processes]
    done = skipped = 0
    start = time.perf_counter()
    # One bar, on the main process, for the whole run: it counts every process's stored candidates.
    bar = RoundProgress(settings, rnd.id, sum(len(v) for v in todo.values()), f"generate {round_name}",
                        enabled=progress and state.is_main_process)
    skipped += config.num_candidates * sum(1 for sc in mine if not todo[sc.id])
    work = [sc for sc in mine if todo[sc.id]]
    for first in range(0, len(work), ENCODE_CHUNK):
        chunk_scenarios = work[first:first + ENCODE_CHUNK]
        with encoders_on(pipe, state.device) if plan.offload_encoders else nullcontext():
            inputs = {sc.id: encode_scenario(pipe, settings, sc, config) for sc in chunk_scenarios}
        for sc in chunk_scenarios:
            text, refs = inputs.pop(sc.id)
            done_here, skipped_here = _generate_scenario(settings, loaded, sc, todo[sc.id], text, refs, config,
                                                         round_name, grid, params, bar)
            done, skipped = done + done_here, skipped + skipped_here + config.num_candidates - len(todo[sc.id])
    state.wait_for_everyone()
    bar.close()
    shares = [(done, skipped, len(mine), peak_gb(state.device))]
    if state.num_processes > 1:
        shares = gather_object(shares)
    peaks = [s[3] for s in shares if s[3] is not None]
    return GenerateSummary(sum(s[0] for s in shares), sum(s[1] for s in shares), sum(s[2] for s in shares),
                           time.perf_counter() - start, loaded.fingerprint, state.num_processes,
                           round(max(peaks), 3) if peaks else None, plan.mode.name, plan.quantization)


def encode_scenario(pipe, settings: Settings, sc: Scenario, config: GenerateConfig
                     ) -> tuple[TextEmbeds, References | None]:
    """A scenario's prompt and its references (clean latents with the empty prompt), encoded."""
    text = encode_text(pipe, [sc.prompt], config.max_sequence_length)
    refs = None
    if sc.references:
        images = [Image.open(asset_path(settings.store_dir, r.asset)) for r in sc.references]
        refs = encode_references(pipe, images, (config.width, config.height), config.max_sequence_length)
    return text, refs


def _generate_scenario(settings: Settings, loaded: LoadedModel, sc: Scenario, indices: list[int],
                       text: TextEmbeds, refs: References | None, config: GenerateConfig, round_name: str, grid,
                       params: dict, bar: RoundProgress) -> tuple[int, int]:
    """Denoise, decode and store the candidates `indices` of one scenario; (stored, already there)."""
    done = skipped = 0
    seed_of = lambda index: candidate_seed(config.seed, round_name, sc.key, index)  # noqa: E731
    for chunk, seeds, scale, images in sample_images(loaded, indices, text, refs, config, grid, seed_of):
        own = {**params, "reference_guidance_scale": scale}
        for index, seed, image in zip(chunk, seeds, images):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            if _store_candidate(settings, sc.id, index, buf.getvalue(), seed, own, loaded.fingerprint):
                done += 1
            else:
                skipped += 1
        bar.refresh()
    return done, skipped


def sample_images(loaded: LoadedModel, indices: list[int], text: TextEmbeds, refs: References | None,
                  config: GenerateConfig, grid, seed_of) -> Iterator[tuple[list[int], list[int], float, list]]:
    """The images `indices` of one scenario, denoised and decoded a batch at a time: yields (indices, seeds,
    reference-guidance scale, PIL images) per batch. `seed_of(index)` gives each image its seed. Studies
    (storyloop/studies/generate.py) sample through this too, so an arm draws exactly as a round does."""
    pipe = loaded.pipe
    batches = _batches(indices, config, guided=refs is not None)
    cache = None
    reads_refs = any(scale != 0.0 for scale, _ in batches)  # s = 0 samples without them
    if refs is not None and config.use_reference_cache and reads_refs:  # one pass serves all K candidates
        cache = reference_cache(pipe, refs, config.guidance_scale)
    for scale, chunk in batches:
        seeds = [seed_of(index) for index in chunk]
        tokens = sample(pipe.transformer, pipe.scheduler, text.expand(len(chunk)), grid, seeds, refs,
                        config.num_inference_steps, config.guidance_scale, config.use_reference_cache,
                        reference_cache=cache, reference_guidance_scale=scale)
        yield chunk, seeds, scale, decode_tokens(pipe, tokens, grid)


def reference_cache(pipe: FluxPipeline, refs: References, guidance_scale: float) -> GSAContext:
    """The references' K/V at every layer, written once for all the steps and images that read them.
    References go through the Stage-1 model only (the DPO adapter off), as in DPO training (see dpo/trainer.py)."""
    with torch.no_grad(), adapter_off(pipe.transformer, "dpo"):
        return write_reference_cache(pipe.transformer, refs, guidance_scale)


class RoundProgress:
    """A progress bar over a round's new candidates, read from the database so that it counts the
    candidates every process stored, not only this one's."""

    def __init__(self, settings: Settings, round_id: int, total: int, desc: str, enabled: bool):
        self.settings, self.round_id, self.enabled = settings, round_id, enabled
        self.start_count = self._count() if enabled else 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, unit="img", desc=desc, disable=not enabled)

    def _count(self) -> int:
        with read_scope(self.settings.db_url) as session:
            return session.scalar(select(func.count(Candidate.id)).join(Scenario)
                                  .where(Scenario.round_id == self.round_id))

    def refresh(self) -> None:
        if not self.enabled:
            return
        made = self._count() - self.start_count
        self.bar.update(made - self.bar.n)
        self.bar.set_postfix(img_per_s=f"{made / (time.perf_counter() - self.start):.2f}")

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def encode_references(pipe: FluxPipeline, images: list[Image.Image], target: tuple[int, int],
                      max_sequence_length: int) -> References:
    """A scenario's references, each at its own aspect ratio's bucket of about the target's area
    (`buckets.reference_size`), in slot order; references of one size are encoded together."""
    factor = size_factor(pipe)
    sizes = [reference_size(*im.size, target, factor) for im in images]
    tokens: list[torch.Tensor] = [None] * len(images)
    for size in dict.fromkeys(sizes):
        rows = [i for i, s in enumerate(sizes) if s == size]
        for i, t in zip(rows, encode_images(pipe, [images[i] for i in rows], size)):
            tokens[i] = t
    text = encode_text(pipe, [REFERENCE_PROMPT] * len(images), max_sequence_length)
    return References.of(tokens, text, [latent_grid(pipe, h, w) for w, h in sizes])


def _batches(indices: list[int], config: GenerateConfig, guided: bool) -> list[tuple[float, list[int]]]:
    """(scale, candidate indices) batches of at most `batch_size`, one reference-guidance scale each
    (a scenario without references has nothing to guide by: scale 1 for all)."""
    scales = {i: config.reference_guidance(i) if guided else 1.0 for i in indices}
    out = []
    for scale in dict.fromkeys(scales.values()):
        same = [i for i in indices if scales[i] == scale]
        out += [(scale, same[i:i + config.batch_size]) for i in range(0, len(same), config.batch_size)]
    return out


def _store_candidate(settings: Settings, scenario_id: int, index: int, png: bytes, seed: int, params: dict,
                     fingerprint: str) -> bool:
    """Commit one candidate; False if another process stored this (scenario, index) meanwhile."""
    try:
        with session_scope(settings.db_url) as session:
            asset = put_image(session, settings.store_dir, inspect_bytes(png, f"candidate {index}"))
            session.add(Candidate(scenario_id=scenario_id, index=index, asset=asset, seed=seed, params=params,
                                  model_fingerprint=fingerprint))
    except IntegrityError:
        return False
    return True
