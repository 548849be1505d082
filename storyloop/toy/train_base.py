"""Training the toy base model: text-to-image on single frames, from scratch, no GSA.

Plain flow matching (the same noise-level sampling as Stage-1), full-weight AdamW with an EMA of
the weights, which is what gets saved. Deterministic for a seed on a CPU.

The forward runs under bf16 autocast by default (weights, optimizer and EMA stay fp32): on this
2-core CPU a step takes 0.27 s instead of 0.42 s, and the base is step-limited (its loss still falls
steeply at the end), so the same 15-minute budget buys about 1.6x the steps.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from storyloop.generation.flux import TextEmbeds, predict
from storyloop.generation.models import encode_text
from storyloop.generation.stage1 import sample_sigmas
from storyloop.toy.data import image_tokens, single_frames
from storyloop.toy.model import MAX_SEQUENCE_LENGTH, build_toy_pipeline, save_toy_pipeline
from storyloop.toy.render import render
from storyloop.toy.world import split_characters


PRECISIONS = ("no", "bf16")


@dataclass
class BaseTrainConfig:
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    ema_decay: float = 0.998
    frames: int = 12000  # rendered training frames (training characters only)
    seed: int = 0
    mixed_precision: str = "bf16"  # one of PRECISIONS: "bf16" (autocast) or "no"

    def __post_init__(self):
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}")


def _encode_captions(pipe, captions: list[str], batch: int = 512) -> TextEmbeds:
    parts = [encode_text(pipe, captions[i:i + batch], MAX_SEQUENCE_LENGTH) for i in range(0, len(captions), batch)]
    return TextEmbeds(torch.cat([p.prompt_embeds for p in parts]), torch.cat([p.pooled for p in parts]))


def train_base(out: Path, config: BaseTrainConfig = BaseTrainConfig(), progress: bool = True) -> Path:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    pipe = build_toy_pipeline(config.seed)
    train_chars, _ = split_characters()
    data = single_frames(train_chars, config.frames, config.seed)
    tokens = image_tokens([render(f) for f in tqdm(data.frames, desc="render", disable=not progress, leave=False)])
    text = _encode_captions(pipe, data.captions)
    model = pipe.transformer.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    sched_cfg = dict(pipe.scheduler.config)
    g = torch.Generator().manual_seed(config.seed)
    bar = tqdm(range(config.steps), desc="toy base", unit="step", disable=not progress)
    losses = []
    for step in bar:
        lr = config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps)) * 0.9 + 0.1
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(tokens), (config.batch_size,), generator=g)
        x0 = tokens[idx]
        noise = torch.randn(x0.shape, generator=g)
        sigmas = sample_sigmas(config.batch_size, x0.shape[1], sched_cfg, 0.0, 1.0, g)
        s = sigmas.view(-1, 1, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
            pred = predict(model, (1 - s) * x0 + s * noise, sigmas,
                           TextEmbeds(text.prompt_embeds[idx], text.pooled[idx]), (8, 8))
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    pipe.transformer = ema
    out.mkdir(parents=True, exist_ok=True)
    save_toy_pipeline(pipe, out)
    (out / "training.json").write_text(json.dumps({
        "config": asdict(config), "final_loss_ema50": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": time.perf_counter() - start, "command": "storyloop toy train-base"}, indent=2))
    return out
