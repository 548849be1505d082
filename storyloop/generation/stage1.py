"""Stage-1 training (paper section 4.3): a GSA LoRA that learns identity from clean references.

Each training sample is a group from one story/character: sample 0 is the target at a random
flow-matching noise level (FLUX's resolution-shifted schedule), samples 1..N are references at
t = 0. The loss (eq. 6) is the velocity MSE on the target only.

Dataset folder: `metadata.jsonl`, one image a line: {"group": "story-07", "image": "a.png",
"caption": "..."}; paths are relative to the folder. Images are VAE-encoded and captions
text-encoded once into a cache under the output folder (keyed by content hash), so training never
runs the VAE or T5. Every random choice of step s derives from (seed, s): resuming from a
checkpoint replays exactly what an uninterrupted run would have done.
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

from storyloop.generation.checkpoints import resume_latest, save_checkpoint
from storyloop.generation.config import Stage1Config
from storyloop.generation.encoding_cache import EncodingCache
from storyloop.generation.flux import References, TextEmbeds, predict_with_references
from storyloop.generation.gsa import POSITION_SCHEME, REFERENCE_PROMPT, install_gsa
from storyloop.generation.lora import lora_config, save_lora
from storyloop.generation.memory import apply_memory_plan
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.training import (RunClock, accelerate_precision, make_lr_scheduler, make_optimizer,
                                           plan_for, use_checkpointing)
from storyloop.generation.training import weight_dtype as dtype_for
from storyloop.generation.models import (LoraMeta, ModelError, base_fingerprint, encode_images, encode_text,
                                         latent_grid, load_flux)

ADAPTER = "stage1"


# -- data -------------------------------------------------------------------------------------------

@dataclass
class EncodedDataset:
    """Cached encodings: per image its packed latent tokens, per caption its text embedding."""

    groups: list[list[int]]  # image indices per group with at least N + 1 images
    latents: torch.Tensor  # [images, L, C]
    captions: TextEmbeds  # one row per image
    empty: TextEmbeds  # one row: the empty prompt (references, dropped captions)
    grid: tuple[int, int]
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
    size = (config.resolution, config.resolution)
    grid = latent_grid(pipe, *size)
    key = f"{base_fingerprint(config.model)}|{config.resolution}|{config.max_sequence_length}"
    cache = EncodingCache(cache_dir, key)
    cached = cache.get

    latents, embeds, pooled = [], [], []
    fingerprint = hashlib.sha256()
    for row in tqdm(rows, desc="encode dataset", unit="img", leave=False, disable=not progress):
        image_path = Path(config.dataset) / row["image"]
        digest = hashlib.sha256(image_path.read_bytes()).hexdigest()
        fingerprint.update(json.dumps([row["group"], row["caption"], digest]).encode() + b"\n")
        encoded = cached(f"img:{digest}", lambda: {"x": encode_images(pipe, [Image.open(image_path)], size)[0]})
        latents.append(encoded["x"])
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
    return EncodedDataset(groups, torch.stack(latents), TextEmbeds(torch.stack(embeds), torch.stack(pooled)),
                          TextEmbeds(empty["prompt_embeds"][None], empty["pooled"][None]), grid,
                          fingerprint.hexdigest())


def _text_tensors(pipe, prompt: str, max_len: int) -> dict[str, torch.Tensor]:
    t = encode_text(pipe, [prompt], max_len)
    return {"prompt_embeds": t.prompt_embeds[0], "pooled": t.pooled[0]}


@dataclass
class Stage1Batch:
    target: torch.Tensor  # [B, L, C] clean target latents
    text: TextEmbeds  # B rows (captions, some dropped to empty)
    refs: References  # B * N rows, grouped by target

    def rows(self, index: slice) -> Stage1Batch:
        """The targets `index` selects, with their own references."""
        picked = torch.arange(self.target.shape[0])[index]
        n = self.refs.count // max(self.target.shape[0], 1)
        ref_rows = (picked[:, None] * n + torch.arange(n)).flatten()
        text = TextEmbeds(self.text.prompt_embeds[picked], self.text.pooled[picked])
        refs = References(self.refs.tokens[ref_rows], TextEmbeds(self.refs.text.prompt_embeds[ref_rows],
                                                                   self.refs.text.pooled[ref_rows]), self.refs.grid)
        return Stage1Batch(self.target[picked], text, refs)


def make_batch(data: EncodedDataset, config: Stage1Config, rng: np.random.Generator,
               size: int | None = None) -> Stage1Batch:
    """`size` (default: train_batch_size) groups; in each a random target and N other images of its group
    as references."""
    n = config.num_references
    target_ids, ref_ids, drop = [], [], []
    for _ in range(size or config.train_batch_size):
        group = data.groups[rng.integers(len(data.groups))]
        chosen = rng.choice(len(group), size=n + 1, replace=False)
        target_ids.append(group[chosen[0]])
        ref_ids.extend(group[c] for c in chosen[1:])
        drop.append(rng.random() < config.caption_dropout)
    embeds = torch.stack([data.empty.prompt_embeds[0] if d else data.captions.prompt_embeds[i]
                          for i, d in zip(target_ids, drop)])
    pooled = torch.stack([data.empty.pooled[0] if d else data.captions.pooled[i] for i, d in zip(target_ids, drop)])
    refs = References(data.latents[ref_ids], data.empty.expand(len(ref_ids)), data.grid)
    return Stage1Batch(data.latents[target_ids], TextEmbeds(embeds, pooled), refs)


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
                       grid, config: Stage1Config) -> torch.Tensor:
    """Eq. 6: velocity MSE on the targets, conditioned on clean references through GSA."""
    s = sigmas.view(-1, 1, 1)
    noisy = (1 - s) * batch.target + s * noise
    pred = predict_with_references(transformer, noisy, sigmas, batch.text, grid, batch.refs,
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
    plan = plan_for(config, "stage1", accelerator.device, work)

    pipe = load_flux(config.model, dtype=weight_dtype, device=accelerator.device, quantization=plan.quantization)
    if accelerator.num_processes > 1:  # each process encodes its share into the cache, then all read it whole
        encode_dataset(pipe, config, out / "cache", shard=(accelerator.process_index, accelerator.num_processes),
                       progress=progress and accelerator.is_local_main_process)
        accelerator.wait_for_everyone()
    data = encode_dataset(pipe, config, out / "cache", progress=progress and accelerator.is_local_main_process)
    apply_memory_plan(pipe, plan, "stage1")  # the encoders (and VAE) leave the GPU where the mode says so
    transformer = pipe.transformer
    torch.manual_seed(config.seed)  # LoRA A matrices start from the seed too
    transformer.add_adapter(lora_config(config.rank, config.lora_alpha), adapter_name=ADAPTER)
    install_gsa(transformer)
    if use_checkpointing(config, plan):
        transformer.enable_gradient_checkpointing()
    cast_training_params(transformer, dtype=torch.float32)  # LoRA weights train in fp32
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = make_optimizer([{"params": params}], config, plan, config.learning_rate, config.adam_weight_decay)
    lr_scheduler = make_lr_scheduler(optimizer, config, config.max_train_steps)

    step = resume_latest(transformer, ADAPTER, optimizer, out, data.fingerprint, lr_scheduler) if resume else 0
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("stage1", config=asdict(config))

    sched_cfg = dict(pipe.scheduler.config)
    num_tokens = data.grid[0] * data.grid[1]
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
            sigmas = sample_sigmas(world * config.train_batch_size, num_tokens, sched_cfg, config.logit_mean,
                                   config.logit_std, gen)
            noise = torch.randn(batch.target.shape, generator=gen)
            batch, sigmas, noise = batch.rows(mine), sigmas[mine], noise[mine]
            batch = _to(batch, accelerator.device, weight_dtype)
            with accelerator.accumulate(transformer):
                loss = flow_matching_loss(transformer, batch, sigmas.to(accelerator.device),
                                          noise.to(accelerator.device, weight_dtype), data.grid, config)
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
                                config.checkpoints_total_limit, data.fingerprint, lr_scheduler)
            accelerator.wait_for_everyone()  # no process runs ahead of a checkpoint it could resume from
    bar.close()
    accelerator.wait_for_everyone()
    lora_dir = out / "lora"
    if accelerator.is_main_process:
        meta = LoraMeta("stage1", base_fingerprint(config.model), POSITION_SCHEME, config.rank, config.lora_alpha,
                        step, extra={"config": asdict(config), "dataset_sha256": data.fingerprint,
                                     "dataset_images": len(data.latents)})
        save_lora(accelerator.unwrap_model(transformer), ADAPTER, lora_dir, meta)
        clock.write(out, memory=plan.mode.name, quantization=plan.quantization, precision=precision,
                    processes=world, tokens_per_image=num_tokens)
    accelerator.end_training()
    return lora_dir


def _to(batch: Stage1Batch, device, dtype) -> Stage1Batch:
    def text(t: TextEmbeds) -> TextEmbeds:
        return TextEmbeds(t.prompt_embeds.to(device, dtype), t.pooled.to(device, dtype))

    refs = References(batch.refs.tokens.to(device, dtype), text(batch.refs.text), batch.refs.grid)
    return Stage1Batch(batch.target.to(device, dtype), text(batch.text), refs)
