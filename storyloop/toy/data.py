"""Toy datasets: rendered frames with captions, as tensors (base training) or as folders (Stage-1)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyloop.generation.flux import pack_latents
from storyloop.toy.codec import PixelUnshuffleCodec
from storyloop.toy.render import render
from storyloop.toy.world import STYLES, Character, Frame, Story, alone, caption, make_stories, random_frame

DETAIL_BASE = (("full", 0.6), ("partial", 0.25), ("none", 0.15))  # base model: mostly full descriptions
DETAIL_STORY = (("partial", 0.5), ("none", 0.5))  # story frames: identity must come from references


def pick_detail(rng: random.Random, table) -> str:
    return rng.choices([d for d, _ in table], weights=[w for _, w in table])[0]


def image_tokens(images: list) -> torch.Tensor:
    """Packed codec latents [n, 64, 48] of 64x64 RGB images (the toy codec, without loading a pipeline)."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0
    return pack_latents(PixelUnshuffleCodec().encode(x).latent_dist.mode())


@dataclass
class FrameSet:
    frames: list[Frame]
    captions: list[str]


def single_frames(characters: list[Character], n: int, seed: int) -> FrameSet:
    """Independent frames (random style per frame) with mostly detailed captions: the base model's data."""
    rng = random.Random(seed)
    frames, caps = [], []
    for _ in range(n):
        f = random_frame(rng, rng.choice(characters), rng.choice(STYLES), characters)
        frames.append(f)
        caps.append(caption(f, rng, pick_detail(rng, DETAIL_BASE)))
    return FrameSet(frames, caps)


def write_story_dataset(stories: list[Story], folder: Path, seed: int, pair_groups: bool = False) -> Path:
    """Render stories to a Stage-1 dataset folder: images + metadata.jsonl (group = story).

    `pair_groups`: also one group per frame with a companion, of that frame, another frame of the story
    (the protagonist's reference) and the companion drawn alone in the story's style (its own reference,
    as toy scenarios give it): Stage-1 draws a target and two references from a group, so a third of
    these draws is a two-character frame conditioned on each character's own reference, the way a
    two-character scenario is. The story groups are written exactly as without them.
    """
    rng = random.Random(seed)
    pair_rng = random.Random(f"{seed}:pairs")  # its own stream: the story rows stay what they were
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as fh:
        def row(group: str, name: str, frame: Frame, r: random.Random) -> None:
            fh.write(json.dumps({"group": group, "image": name,
                                 "caption": caption(frame, r, pick_detail(r, DETAIL_STORY))}) + "\n")

        for story in stories:
            for i, frame in enumerate(story.frames):
                name = f"{story.story_id}-{i}.png"
                render(frame).save(folder / name)
                row(story.story_id, name, frame, rng)
        if pair_groups:
            for story in stories:
                for i, frame in enumerate(story.frames):
                    if frame.companion is None:
                        continue
                    j = next(k for k in range(len(story.frames)) if k != i)  # the first other frame, as scenarios
                    own = alone(frame.companion, story.style, pair_rng)
                    own_name = f"{story.story_id}-{i}-companion.png"
                    render(own).save(folder / own_name)
                    group = f"{story.story_id}-pair{i}"
                    row(group, f"{story.story_id}-{i}.png", frame, pair_rng)
                    row(group, f"{story.story_id}-{j}.png", story.frames[j], pair_rng)
                    row(group, own_name, own, pair_rng)
    return folder


def stage1_stories(characters: list[Character], n: int, seed: int) -> list[Story]:
    return make_stories(characters, n, seed, prefix="train")
