"""Attribute readers: a small CNN that recovers identity, style, scene and count from a toy frame.

It reads every character's identity: the protagonist's under the attribute names (shape, color, ...)
and the companion's, the small character on the right of a two-character frame, under
companion_<attribute> (meaningless where there is no companion; the count says whether there is).
The layout is fixed (a companion always stands small on the right, the protagonist then left or
middle), so the companion is read from the frame's right half and no detector has to find it.

Trained on rendered frames of every character (it is the measuring instrument, not part of the
generator), with mild noise and blur so it reads generated frames as well as rendered ones. Its
accuracy on held-out rendered frames is reported by `storyloop toy train-readers`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from storyloop.toy.render import render
from storyloop.toy.world import (ACCESSORIES, COLORS, GROUNDS, HAT_COLORS, HATS, IDENTITY, SHAPES, SKIES, STYLES,
                                 Frame, all_characters, random_frame)

_IDENTITY_VALUES = {"shape": SHAPES, "color": tuple(COLORS), "hat": HATS, "hat_color": tuple(HAT_COLORS),
                    "accessory": ACCESSORIES}
HEADS = {**_IDENTITY_VALUES, "style": STYLES, "sky": tuple(SKIES), "ground": tuple(GROUNDS), "count": (1, 2),
         **{f"companion_{a}": _IDENTITY_VALUES[a] for a in IDENTITY}}
IGNORE = -100  # a label that does not exist (no companion; a hat colour without a hat): no loss, no accuracy
TWO_SHARE = 0.5  # share of training frames with a companion: the companion heads learn from these only


def _block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GELU(), nn.Conv2d(o, o, 3, padding=1), nn.GELU(),
                         nn.MaxPool2d(2))


class AttributeReader(nn.Module):
    """Two small CNNs: one reads the whole frame (the protagonist, style, scene, count), one the right half,
    where a companion stands, for the companion's identity. Sharing one CNN cost the style head 8-14
    points (striped read as flat): its features had to make room for a second, smaller character."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_block(3, 24), _block(24, 48), _block(48, 64))  # 32 x 32 -> 4 x 4
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 256), nn.GELU())
        self.companion_features = nn.Sequential(_block(3, 24), _block(24, 48), _block(48, 64))  # 32 x 16 -> 4 x 2
        self.companion_trunk = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8, 256), nn.GELU())
        self.heads = nn.ModuleDict({k: nn.Linear(256, len(v)) for k, v in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(self.features(x))
        c = self.companion_trunk(self.companion_features(x[..., x.shape[-1] // 2:]))  # the right half
        return {k: head(c if k.startswith("companion_") else h) for k, head in self.heads.items()}


def to_tensor(images) -> torch.Tensor:
    """Images at the detail the toy codec keeps (2x2 pooled: 32 x 32), rendered and generated alike."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((64, 64)), dtype=np.float32) for im in images])
    return F.avg_pool2d(torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0, 2)


def labels(frame: Frame) -> dict[str, int]:
    """Each head's class for this frame; IGNORE where the attribute does not exist."""
    t = frame.truth()
    out = {k: IGNORE if t[k] is None else HEADS[k].index(t[k]) for k in HEADS}
    for prefix in ("", "companion_"):  # a hat colour is only defined where there is a hat
        if t[f"{prefix}hat"] in (None, "none"):
            out[f"{prefix}hat_color"] = IGNORE
    return out


def _random_frames(n: int, seed: int) -> list[Frame]:
    rng = random.Random(seed)
    chars = all_characters()
    return [random_frame(rng, rng.choice(chars), rng.choice(STYLES), chars, two_prob=TWO_SHARE) for _ in range(n)]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """What generated frames look like next to rendered ones: a little noise, a little blur."""
    noise = torch.randn(x.shape, generator=g) * torch.rand(x.shape[0], 1, 1, 1, generator=g) * 0.15
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # generated frames are softer
    mix = (torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.3).float()
    return (x * (1 - mix) + blurred * mix + noise).clamp(-1, 1)


def _loss(out: dict, y: dict) -> torch.Tensor:
    total = 0.0
    for k in HEADS:
        if (y[k] != IGNORE).any():  # a batch without a companion teaches its heads nothing
            total = total + F.cross_entropy(out[k], y[k], ignore_index=IGNORE)
    return total


def train_readers(out: Path, frames: int = 20000, epochs: int = 12, seed: int = 0, progress: bool = True) -> dict:
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_frames, val_frames = _random_frames(frames, seed), _random_frames(2000, seed + 1)
    x = to_tensor([render(f) for f in tqdm(train_frames, desc="render", leave=False, disable=not progress)])
    rows = [labels(f) for f in train_frames]
    y = {k: torch.tensor([r[k] for r in rows]) for k in HEADS}
    model = AttributeReader()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    bar = tqdm(total=steps, desc="readers", unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 127, 128):
            idx = order[i:i + 128]
            loss = _loss(model(_augment(x[idx], g)), {k: v[idx] for k, v in y.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    accuracy = evaluate(model, val_frames)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "readers.pt")
    (out / "readers.json").write_text(json.dumps({"validation_accuracy": accuracy, "frames": frames,
                                                  "epochs": epochs, "seed": seed, "two_share": TWO_SHARE,
                                                  "seconds": round(time.perf_counter() - start, 1),
                                                  "torch_threads": torch.get_num_threads(),
                                                  "command": "storyloop toy train-readers"}, indent=2))
    return accuracy


@torch.no_grad()
def read(model: AttributeReader, images) -> list[dict]:
    """Attribute values (and the confidence of each) for each image."""
    outs = model(to_tensor(images))
    probs = {k: v.softmax(-1) for k, v in outs.items()}
    results = []
    for i in range(len(images)):
        r = {}
        for k, values in HEADS.items():
            p = probs[k][i]
            r[k] = values[int(p.argmax())]
            r[f"{k}_p"] = float(p.max())
        results.append(r)
    return results


@torch.no_grad()
def evaluate(model: AttributeReader, frames: list[Frame]) -> dict[str, float]:
    got = read(model, [render(f) for f in frames])
    acc = {}
    for k in HEADS:  # over the frames where the attribute exists (companion heads: two-character frames)
        pairs = [(g[k], f.truth()[k]) for g, f in zip(got, frames) if labels(f)[k] != IGNORE]
        acc[k] = sum(a == b for a, b in pairs) / len(pairs)
    return acc


def load_readers(folder: Path) -> AttributeReader:
    model = AttributeReader()
    model.load_state_dict(torch.load(Path(folder) / "readers.pt", map_location="cpu", weights_only=True))
    return model.eval()
