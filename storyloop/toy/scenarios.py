"""Toy scenarios: frames of a story to generate, conditioned on other frames of it as references."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from storyloop.toy.data import DETAIL_STORY, pick_detail
from storyloop.toy.render import render
from storyloop.toy.world import Character, Frame, caption, make_stories


@dataclass
class ToyScenario:
    key: str
    story_id: str
    frame_index: int
    asked: Frame  # the frame the prompt describes; its protagonist and style come from the references
    prompt: str
    references: list[Frame]


def make_scenarios(characters: list[Character], stories: int, seed: int, prefix: str, references: int = 2,
                   targets_per_story: int = 3) -> list[ToyScenario]:
    """Per story: `references` frames shown as references, up to `targets_per_story` others to generate."""
    rng = random.Random(seed)
    out = []
    for story in make_stories(characters, stories, seed, prefix):
        refs, targets = story.frames[:references], story.frames[references:references + targets_per_story]
        for i, frame in enumerate(targets, start=references):
            out.append(ToyScenario(f"{story.story_id}-f{i}", story.story_id, i, frame,
                                   caption(frame, rng, pick_detail(rng, DETAIL_STORY)), refs))
    return out


def write_scenarios_file(scenarios: list[ToyScenario], folder: Path) -> Path:
    """Reference images and a scenarios JSONL, as `storyloop round create --scenarios` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for sc in scenarios:
        names = []
        for r, frame in enumerate(sc.references):
            name = f"{sc.story_id}-ref{r}.png"
            if not (folder / name).exists():
                render(frame).save(folder / name)
            names.append(name)
        lines.append(json.dumps({"id": sc.key, "story_id": sc.story_id, "frame_index": sc.frame_index,
                                 "prompt": sc.prompt, "references": names}))
    path = folder / "scenarios.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
