"""The toy Stage-1 dataset: story groups as before, and a group per two-character frame with each character's
own reference."""

import json
from collections import defaultdict

import numpy as np
from PIL import Image

from storyloop.toy.data import stage1_stories, write_story_dataset
from storyloop.toy.render import render
from storyloop.toy.world import ASIDE, GROUNDS, SKIES, Frame, split_characters


def rows_of(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_pair_groups_hold_the_frame_a_protagonist_frame_and_the_companion_alone(tmp_path):
    stories = stage1_stories(split_characters()[0], 4, seed=1)
    with_pairs = rows_of(write_story_dataset(stories, tmp_path / "a", seed=1, pair_groups=True))
    without = rows_of(write_story_dataset(stories, tmp_path / "b", seed=1))
    assert [r for r in with_pairs if "-pair" not in r["group"]] == without  # story groups unchanged

    groups = defaultdict(list)
    for r in with_pairs:
        groups[r["group"]].append(r["image"])
    by_id = {s.story_id: s for s in stories}
    two = [(s.story_id, i) for s in stories for i, f in enumerate(s.frames) if f.companion is not None]
    assert two and sorted(g for g in groups if "-pair" in g) == sorted(f"{s}-pair{i}" for s, i in two)
    for story_id, i in two:
        story = by_id[story_id]
        target, protagonist, own = groups[f"{story_id}-pair{i}"]
        assert target == f"{story_id}-{i}.png" and protagonist != target
        alone = np.asarray(Image.open(tmp_path / "a" / own))
        frame = story.frames[i]
        assert not np.array_equal(alone, np.asarray(render(frame)))
        # the companion alone: a frame of it in the story's style, small on the right
        drawn = [render(Frame(frame.companion, story.style, sky, ground, ASIDE, "small"))
                 for sky in SKIES for ground in GROUNDS]
        assert any(np.array_equal(alone, np.asarray(d)) for d in drawn)
