"""Toy scenarios: frames of a story to generate, conditioned on other frames of it as references.

A frame of the protagonist alone is conditioned on the story's first `references` frames, written as
one flat list (one unnamed character), as it always was. A frame with a companion is conditioned on
each character's own references, written as a mapping from character to images (storyloop/characters.py):
the protagonist's first story frames, then the companion drawn alone in the story's style
(`world.alone`), `companion_references` of them. Both kinds hold `references` slots in all, so every
scenario of a round has as many references (DPO batches pairs of scenarios with one reference count,
and Stage-1 trains with one).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from storyloop.toy.data import DETAIL_STORY, pick_detail
from storyloop.toy.render import render
from storyloop.toy.world import COMPANION_SHARE, Character, Frame, alone, caption, make_stories


@dataclass
class ToyScenario:
    key: str
    story_id: str
    frame_index: int
    asked: Frame  # the frame the prompt describes; its characters and style come from the references
    prompt: str
    references: list[Frame]  # in slot order
    # Each reference's character (its key), in slot order; empty: one unnamed character (a flat list).
    characters: list[str] = field(default_factory=list)

    def reference_files(self, names: list[str]) -> list[str] | dict[str, list[str]]:
        """The scenarios file's `references` for these file names (one per slot): a list, or a mapping
        from character to its files in slot order."""
        if not self.characters:
            return list(names)
        grouped: dict[str, list[str]] = {}
        for character, name in zip(self.characters, names):
            grouped.setdefault(character, []).append(name)
        return grouped


def companion_frames(story_id: str, seed: int, companion: Character, style: str, n: int) -> list[Frame]:
    """A companion's own references in a story: drawn alone in the story's style, each in a scene that is a
    pure function of (seed, story, companion, index), so every target that shows it shares the same files."""
    return [alone(companion, style, random.Random(f"{seed}:{story_id}:{companion.key()}:{j}")) for j in range(n)]


def make_scenarios(characters: list[Character], stories: int, seed: int, prefix: str, references: int = 2,
                   targets_per_story: int = 3, companion_share: float = COMPANION_SHARE,
                   companion_references: int = 1) -> list[ToyScenario]:
    """Per story: up to `targets_per_story` frames to generate after its first `references` frames.

    `companion_share`: the share of frames with a companion (world.make_stories; 0.3 keeps every story
    of a seed as it was). A target with a companion gets `companion_references` of the companion's own
    references in place of the protagonist's last frames (0: the protagonist's frames only, as before
    characters had their own references).
    """
    if not 0 <= companion_references < references:
        raise ValueError(f"companion_references must be at least 0 and below references ({references}), so the "
                         f"protagonist keeps a reference (got {companion_references})")
    rng = random.Random(seed)
    out = []
    for story in make_stories(characters, stories, seed, prefix, companion_share):
        refs, targets = story.frames[:references], story.frames[references:references + targets_per_story]
        for i, frame in enumerate(targets, start=references):
            own, names = refs, []
            if frame.companion is not None and companion_references:
                kept = references - companion_references
                own = refs[:kept] + companion_frames(story.story_id, seed, frame.companion, story.style,
                                                     companion_references)
                names = [story.protagonist.key()] * kept + [frame.companion.key()] * companion_references
            out.append(ToyScenario(f"{story.story_id}-f{i}", story.story_id, i, frame,
                                   caption(frame, rng, pick_detail(rng, DETAIL_STORY)), own, names))
    return out


def reference_file_name(sc: ToyScenario, slot: int) -> str:
    """A reference's file: the story's frame r is `<story>-ref<r>.png`, a companion's own reference
    `<story>-<character>-<j>.png` (shared by every scenario that shows them)."""
    if not sc.characters or sc.characters[slot] == sc.asked.protagonist.key():
        return f"{sc.story_id}-ref{slot}.png"
    first = sc.characters.index(sc.characters[slot])
    return f"{sc.story_id}-{sc.characters[slot]}-{slot - first}.png"


def write_scenarios_file(scenarios: list[ToyScenario], folder: Path) -> Path:
    """Reference images and a scenarios JSONL, as `storyloop round create --scenarios` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for sc in scenarios:
        names = []
        for r, frame in enumerate(sc.references):
            name = reference_file_name(sc, r)
            if not (folder / name).exists():
                render(frame).save(folder / name)
            names.append(name)
        lines.append(json.dumps({"id": sc.key, "story_id": sc.story_id, "frame_index": sc.frame_index,
                                 "prompt": sc.prompt, "references": sc.reference_files(names)}))
    path = folder / "scenarios.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
