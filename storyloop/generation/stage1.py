"""Stage-1 training (paper section 4.3): a GSA LoRA that learns identity from clean references.

Each training sample is a group from one story/character: sample 0 is the target at a random
flow-matching noise level (FLUX's resolution-shifted schedule), samples 1..N are references at
t = 0. The loss (eq. 6) is the velocity MSE on the target only.

Dataset folder: `metadata.jsonl`, one image a line: {"group": "story-07", "image": "a.png",
"caption": "..."}; paths are relative to the folder. Images are VAE-encoded and captions
text-encoded once into a cache under the output folder (keyed by content hash and size), so
training never runs the VAE or T5. Every random choice of step s derives from (seed, s): resuming
from a checkpoint replays exactly what an uninterrupted run would have done.

Images of many sizes train in aspect-ratio buckets (generation/buckets.py): each image is encoded
once, at the bucket of about resolution^2 pixels nearest its aspect ratio. A batch's targets come
from one bucket (one token grid per forward); each reference keeps its own bucket, and GSA reads it
at its own grid. A dataset of square images has one bucket, resolution x resolution.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import cast_training_params
from PIL import Image
from tqdm.auto import tqdm

from storyloop.generation.buckets import buckets, nearest_bucket
from storyloop.generation.checkpoints import resume_latest, save_checkpoint
from storyloop.generation.config import Stage1Config
from storyloop.generation.encoding_cache import EncodingCache
from storyloop.generation.flux import References, TextEmbeds, predict_with_references
from storyloop.generation.gsa import POSITION_SCHEME, REFERENCE_PROMPT, install_gsa
from storyloop.generation.fingerprint import base_identity
from storyloop.generation.lora import add_lora, load_lora, lora_config, save_lora
from storyloop.generation.memory import apply_memory_plan
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.training import (RunClock, accelerate_precision, make_lr_scheduler, make_optimizer,
                                           plan_for, use_checkpointing)
from storyloop.generation.training import weight_dtype as dtype_for
from storyloop.generation.models import (LoraMeta, ModelError, base_fingerprint, encode_images, encode_text,
                                         latent_grid, load_flux, size_factor)

ADAPTER = "stage1"


# -- data -------------------------------------------------------------------------------------------

@dataclass
class Bucket:
    """The targets of one token grid: which groups have images there, and how often to draw each."""

    grid: tuple[int, int]
    groups: list[int]  # positions in EncodedDataset.groups of the groups with an image here
    members: list[list[int]]  # per listed group: its images in this bucket
    group_p: np.ndarray  # per listed group: its share of images here, normalised
    p: float  # this bucket's probability: the share of draws (uniform group, uniform image) landing here


@dataclass
class EncodedDataset:
    """Cached encodings: per image its packed latent tokens at its bucket, per caption its text embedding."""

    groups: list[list[int]]  # image indices per group with at least N + 1 images
    latents: list[torch.Tensor]  # per image [L_i, C]
    grids: list[tuple[int, int]]  # per image: its token grid (that of its bucket)
    captions: list[TextEmbeds]  # per image its caption's embedding, one row (memory-mapped: see EncodingCache)
    empty: TextEmbeds  # one row: the empty prompt (references, dropped captions)
    buckets: list[Bucket]  # the buckets that hold a target of some group, by grid
    sizes: list[tuple[int, int]]  # per image: its bucket (width, height) in pixels
    fingerprint: str  # sha256 over every row's group, caption and image bytes: what trained the LoRA


def read_metadata(folder: Path) -> list[dict]:
    path = Path(folder) / "metadata.jsonl"
    if not path.is_file():
        raise ModelError(f"{folder}: no metadata.jsonl (one {{group, image, caption}} object a line)")
    rows = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"group": str(row["group"]), "image": str(row["image"]), "caption": str(row["caption"])})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: line {no}: needs group, image and caption ({exc})") from None
        if not (Path(folder) / rows[-1]["image"]).is_file():
            raise ModelError(f"{path}: line {no}: image {rows[-1]['image']!r} not found")
    return rows


def encode_dataset(pipe, config: Stage1Config, cache_dir: Path, shard: tuple[int, int] | None = None,
                   progress: bool = True) -> EncodedDataset | None:
    """Encode every image and caption once; reuse cache files keyed by content hash.

    With `shard = (rank, world)` only every world-th row is encoded into the cache and nothing is
    returned: several processes fill the cache side by side, then each reads it whole.
    """
    rows = read_metadata(Path(config.dataset))
    if shard is not None:
        rows = rows[shard[0]::shard[1]]
    square = (config.resolution, config.resolution)
    factor = size_factor(pipe)
    sizes = buckets(config.resolution, factor) if config.aspect_buckets else [square]
    key = f"{base_fingerprint(config.model)}|{config.resolution}|{config.max_sequence_length}"
    cache = EncodingCache(cache_dir, key, dtype=pipe.transformer.dtype)
    cached = cache.get

    latents, grids, image_sizes, embeds, pooled = [], [], [], [], []
    fingerprint = hashlib.sha256()
    for row in tqdm(rows, desc="encode dataset", unit="img", leave=False, disable=not progress):
        image_path = Path(config.dataset) / row["image"]
        digest = hashlib.sha256(image_path.read_bytes()).hexdigest()
        fingerprint.update(json.dumps([row["group"], row["caption"], digest]).encode() + b"\n")
        size = nearest_bucket(*_image_size(image_path), sizes)
        encoded = cached(f"img:{digest}:{size[0]}x{size[1]}",
                         lambda: {"x": encode_images(pipe, [Image.open(image_path)], size)[0]})
        latents.append(encoded["x"])
        grids.append(latent_grid(pipe, size[1], size[0]))
        image_sizes.append(size)
        t = cached(f"txt:{row['caption']}", lambda: _text_tensors(pipe, row["caption"], config.max_sequence_length))
        embeds.append(t["prompt_embeds"])
        pooled.append(t["pooled"])
    empty = cached(f"txt:{REFERENCE_PROMPT}", lambda: _text_tensors(pipe, REFERENCE_PROMPT, config.max_sequence_length))
    if shard is not None:
        return None

    by_group: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_group.setdefault(row["group"], []).append(i)
    groups = [ids for ids in by_group.values() if len(ids) >= config.num_references + 1]
    if not groups:
        raise ModelError(f"{config.dataset}: no group has {config.num_references + 1} images "
                         f"(num_references = {config.num_references})")
    return EncodedDataset(groups, latents, grids, [TextEmbeds(e[None], p[None]) for e, p in zip(embeds, pooled)],
                          TextEmbeds(empty["prompt_embeds"][None], empty["pooled"][None]),
                          target_buckets(groups, grids), image_sizes, fingerprint.hexdigest())


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable image ({exc})") from None


def target_buckets(groups: list[list[int]], grids: list[tuple[int, int]]) -> list[Bucket]:
    """The buckets targets are drawn from, so that bucketing changes no image's chance to be a target.

    Without buckets a target is a uniform group, then a uniform image of it: an image of group g is
    drawn with probability 1 / (G |g|). Drawing a bucket b with probability sum_g |g & b| / (G |g|),
    then a group in proportion to |g & b| / |g|, then a uniform image of g in b gives every image that
    same chance.
    """
    found: dict[tuple[int, int], dict[int, list[int]]] = {}
    for g, members in enumerate(groups):
        for i in members:
            found.setdefault(grids[i], {}).setdefault(g, []).append(i)
    out = []
    for grid in sorted(found):
        where = found[grid]
        shares = np.array([len(where[g]) / len(groups[g]) for g in where])
        out.append(Bucket(grid, list(where), list(where.values()), shares / shares.sum(),
                          float(shares.sum() / len(groups))))
    return out


def _text_tensors(pipe, prompt: str, max_len: int) -> dict[str, torch.Tensor]:
    t = encode_text(pipe, [prompt], max_len)
    return {"prompt_embeds": t.prompt_embeds[0], "pooled": t.pooled[0]}


@dataclass
class Stage1Batch:
    target: torch.Tensor  # [B, L, C] clean target latents, all of one bucket
    text: TextEmbeds  # B rows (captions, some dropped to empty)
    refs: References  # B * N rows, grouped by target, each at its own bucket
    grid: tuple[int, int]  # the targets' token grid

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def rows(self, index: slice) -> Stage1Batch:
        """The targets `index` selects, with their own references."""
        picked = torch.arange(self.target.shape[0])[index]
        n = self.refs.count // max(self.target.shape[0], 1)
        ref_rows = (picked[:, None] * n + torch.arange(n)).flatten()
        text = TextEmbeds(self.text.prompt_embeds[picked], self.text.pooled[picked])
        return Stage1Batch(self.target[picked], text, self.refs.rows(ref_rows.tolist()), self.grid)


def make_batch(data: EncodedDataset, config: Stage1Config, rng: np.random.Generator,
               size: int | None = None) -> Stage1Batch:
    """`size` (default: train_batch_size) groups; in each a random target and N other images of its group
    as references. All targets come from one bucket (drawn first, see `target_buckets`).

    The draws of a dataset with one bucket (square images) are call for call those made before buckets
    existed, so such a run replays bit for bit.
    """
    n = config.num_references
    several = len(data.buckets) > 1
    bucket = data.buckets[rng.choice(len(data.buckets), p=[b.p for b in data.buckets]) if several else 0]
    uniform = len(set(bucket.group_p.tolist())) == 1
    target_ids, ref_ids, drop = [], [], []
    for _ in range(size or config.train_batch_size):
        k = rng.integers(len(bucket.groups)) if uniform else rng.choice(len(bucket.groups), p=bucket.group_p)
        group, inside = data.groups[bucket.groups[k]], bucket.members[k]
        if len(inside) == len(group):  # the whole group is in this bucket: the draw of old
            chosen = [group[c] for c in rng.choice(len(group), size=n + 1, replace=False)]
        else:  # a target of this bucket, then N of the group's other images (any bucket)
            target = inside[rng.integers(len(inside))]
            others = [i for i in group if i != target]
            chosen = [target] + [others[c] for c in rng.choice(len(others), size=n, replace=False)]
        target_ids.append(chosen[0])
        ref_ids.extend(chosen[1:])
        drop.append(rng.random() < config.caption_dropout)
    text = [data.empty if d else data.captions[i] for i, d in zip(target_ids, drop)]
    embeds = torch.cat([t.prompt_embeds for t in text])
    pooled = torch.cat([t.pooled for t in text])
    refs = References.of([data.latents[i] for i in ref_ids], data.empty.expand(len(ref_ids)),
                         [data.grids[i] for i in ref_ids]) if ref_ids else \
        References(torch.zeros(0, bucket.grid[0] * bucket.grid[1], data.latents[0].shape[-1]),
                   data.empty.expand(0), bucket.grid)
    target = torch.stack([data.latents[i] for i in target_ids])
    return Stage1Batch(target, TextEmbeds(embeds, pooled), refs, bucket.grid)


def sample_sigmas(n: int, num_tokens: int, scheduler_config, logit_mean: float, logit_std: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Noise levels: logit-normal u, then FLUX's resolution shift (the `mu` of its sampler)."""
    u = torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=generator))
    if scheduler_config.get("use_dynamic_shifting", False):
        c = scheduler_config
        slope = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
        mu = c["base_shift"] + slope * (num_tokens - c["base_image_seq_len"])
        return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    shift = scheduler_config.get("shift", 1.0)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(transformer, batch: Stage1Batch, sigmas: torch.Tensor, noise: torch.Tensor,
                       config: Stage1Config) -> torch.Tensor:
    """Eq. 6: velocity MSE on the targets, conditioned on clean references through GSA.

    References at the targets' grid share the targets' forward (the "batch" pass); references of
    other buckets are written first, with their graph, then read (see `predict_with_references`).
    """
    s = sigmas.view(-1, 1, 1)
    noisy = (1 - s) * batch.target + s * noise
    pred = predict_with_references(transformer, noisy, sigmas, batch.text, batch.grid, batch.refs,
                                   config.guidance_scale, refs_per_target=config.num_references)
    return torch.nn.functional.mse_loss(pred.float(), (noise - batch.target).float())


# -- training ---------------------------------------------------------------------------------------

def train_stage1(config: Stage1Config, resume: bool = False, progress: bool = True) -> Path:
    """Train the Stage-1 GSA LoRA; returns the folder of the saved LoRA."""
    out = Path(config.output_dir)
    precision = accelerate_precision(config)
    accelerator = Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    weight_dtype = dtype_for(precision)
    work = Workload(config.resolution, config.resolution, config.num_references, config.train_batch_size,
                    config.rank, config.max_sequence_length)
    plan = plan_for(config, config.model, "stage1", accelerator.device, work)

    pipe = load_flux(config.model, dtype=weight_dtype, device=accelerator.device, quantization=plan.quantization)
    if accelerator.num_processes > 1:  # each process encodes its share into the cache, then all read it whole
        encode_dataset(pipe, config, out / "cache", shard=(accelerator.process_index, accelerator.num_processes),
                       progress=progress and accelerator.is_local_main_process)
        accelerator.wait_for_everyone()
    data = encode_dataset(pipe, config, out / "cache", progress=progress and accelerator.is_local_main_process)
    apply_memory_plan(pipe, plan, "stage1")  # the encoders (and VAE) leave the GPU where the mode says so
    transformer = pipe.transformer
    torch.manual_seed(config.seed)  # LoRA A matrices start from the seed too
    if config.init_lora:
        start_from(pipe, config)
    else:
        add_lora(transformer, lora_config(config.rank, config.lora_alpha), ADAPTER)
    install_gsa(transformer)
    if use_checkpointing(config, plan):
        transformer.enable_gradient_checkpointing()
    cast_training_params(transformer, dtype=torch.float32)  # LoRA weights train in fp32
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = make_optimizer([{"params": params}], config, plan, config.learning_rate, config.adam_weight_decay)
    step = resume_latest(transformer, ADAPTER, optimizer, out, data.fingerprint) if resume else 0
    lr_scheduler = make_lr_scheduler(optimizer, config, config.max_train_steps, start_step=step)
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("stage1", config=asdict(config))

    sched_cfg = dict(pipe.scheduler.config)
    bar = tqdm(total=config.max_train_steps, initial=step, desc="stage-1", unit="step",
               disable=not (progress and accelerator.is_local_main_process))
    world, rank = accelerator.num_processes, accelerator.process_index
    clock = RunClock(accelerator.device)
    while step < config.max_train_steps:
        for micro in range(config.gradient_accumulation_steps):
            # One global batch of world x B samples, a pure function of (seed, step, micro), and this process
            # takes every world-th sample: P processes of batch B train exactly as one process of batch P x B
            # (and a resumed run replays it). The trailing 0 keeps one process's stream as it always was.
            key = [config.seed, step, micro, 0]
            rng = np.random.default_rng(key)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            mine = slice(rank, None, world)
            batch = make_batch(data, config, rng, size=world * config.train_batch_size)
            sigmas = sample_sigmas(world * config.train_batch_size, batch.num_tokens, sched_cfg, config.logit_mean,
                                   config.logit_std, gen)
            noise = torch.randn(batch.target.shape, generator=gen)
            batch, sigmas, noise = batch.rows(mine), sigmas[mine], noise[mine]
            batch = _to(batch, accelerator.device, weight_dtype)
            with accelerator.accumulate(transformer):
                loss = flow_matching_loss(transformer, batch, sigmas.to(accelerator.device),
                                          noise.to(accelerator.device, weight_dtype), config)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
        step += 1
        lr = lr_scheduler.get_last_lr()[0]  # the rate this step used
        lr_scheduler.step()
        # The mean over processes: what one process of the global batch would have logged.
        logs = {"loss": accelerator.reduce(loss.detach(), "mean").item(), "grad_norm": float(grad_norm), "lr": lr}
        clock.step()
        accelerator.log(logs, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}")
        if step % config.checkpointing_steps == 0 or step == config.max_train_steps:
            if accelerator.is_main_process:  # every process holds the same adapter and optimizer state
                save_checkpoint(accelerator.unwrap_model(transformer), ADAPTER, optimizer, out, step,
                                config.checkpoints_total_limit, data.fingerprint)
            accelerator.wait_for_everyone()  # no process runs ahead of a checkpoint it could resume from
    bar.close()
    accelerator.wait_for_everyone()
    lora_dir = out / "lora"
    if accelerator.is_main_process:
        meta = LoraMeta("stage1", base_fingerprint(config.model), POSITION_SCHEME, config.rank, config.lora_alpha,
                        step, extra={"config": asdict(config), "dataset_sha256": data.fingerprint,
                                     "dataset_images": len(data.latents), "buckets": bucket_counts(data)})
        save_lora(accelerator.unwrap_model(transformer), ADAPTER, lora_dir, meta)
        clock.write(out, memory=plan.mode.name, quantization=plan.quantization, precision=precision,
                    processes=world, resolution=config.resolution)
    accelerator.end_training()
    return lora_dir


def start_from(pipe, config: Stage1Config) -> None:
    """Load `config.init_lora` as the adapter to train (fine-tuning): checked like any Stage-1 LoRA (kind, base,
    position scheme), of the configured rank and alpha, its weights trainable and nothing else."""
    meta = load_lora(pipe, Path(config.init_lora), ADAPTER, base_identity(config.model), "stage1")
    if (meta.rank, meta.alpha) != (config.rank, config.lora_alpha):
        raise ModelError(f"{config.init_lora}: a LoRA of rank {meta.rank} and alpha {meta.alpha}, but rank = "
                         f"{config.rank} and lora_alpha = {config.lora_alpha}: set them to the LoRA's")
    for name, p in pipe.transformer.named_parameters():
        p.requires_grad_("lora_" in name and f".{ADAPTER}." in name)


def bucket_counts(data: EncodedDataset) -> dict[str, int]:
    """Images per bucket, "WxH" -> count: what the LoRA was trained at."""
    counts: dict[str, int] = {}
    for w, h in sorted(data.sizes, key=lambda s: (s[0] / s[1], s)):
        counts[f"{w}x{h}"] = counts.get(f"{w}x{h}", 0) + 1
    return counts


def _to(batch: Stage1Batch, device, dtype) -> Stage1Batch:
    text = TextEmbeds(batch.text.prompt_embeds.to(device, dtype), batch.text.pooled.to(device, dtype))
    return Stage1Batch(batch.target.to(device, dtype), text, batch.refs.to(device, dtype), batch.grid)
