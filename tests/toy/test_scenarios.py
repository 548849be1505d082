"""Toy scenarios with two-character frames: each character's own references, written as the round import reads them."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import Scenario
from storyloop.db.rounds import create_round
from storyloop.toy.render import render
from storyloop.toy.scenarios import make_scenarios, write_scenarios_file
from storyloop.toy.world import ASIDE, Frame, alone, make_stories, split_characters


def two_kinds(companion_share=0.5, **kw):
    train, _ = split_characters()
    scenarios = make_scenarios(train, 12, seed=4, prefix="s", companion_share=companion_share, **kw)
    single = [sc for sc in scenarios if sc.asked.companion is None]
    pair = [sc for sc in scenarios if sc.asked.companion is not None]
    assert single and pair
    return scenarios, single, pair


def test_a_two_character_target_has_each_characters_own_references():
    scenarios, single, pair = two_kinds()
    assert {len(sc.references) for sc in scenarios} == {2}  # one reference count for the whole round
    for sc in single:  # as before: the story's first frames, one unnamed character
        assert sc.characters == [] and all(f.protagonist == sc.asked.protagonist for f in sc.references)
    for sc in pair:
        who, companion = sc.asked.protagonist, sc.asked.companion
        assert sc.characters == [who.key(), companion.key()]
        first, own = sc.references
        assert first.protagonist == who and first.style == sc.asked.style  # the story's frame 0
        assert (own.protagonist, own.companion, own.style) == (companion, None, sc.asked.style)
        assert (own.place, own.size) == (ASIDE, "small")  # where a companion stands


def test_no_companion_references_gives_the_protagonists_frames_as_before():
    before = make_scenarios(split_characters()[0], 12, seed=4, prefix="s", companion_references=0)
    now = make_scenarios(split_characters()[0], 12, seed=4, prefix="s")
    assert [(sc.key, sc.prompt, sc.asked) for sc in before] == [(sc.key, sc.prompt, sc.asked) for sc in now]
    assert all(sc.characters == [] for sc in before)
    assert any(sc.characters for sc in now)
    for a, b in zip(before, now):
        assert a.references[0] == b.references[0]
        if not b.characters:
            assert a.references == b.references


def test_the_companion_share_is_a_knob_and_the_default_keeps_old_stories():
    train, _ = split_characters()
    default = make_stories(train, 40, seed=2, prefix="s")
    assert default == make_stories(train, 40, seed=2, prefix="s", companion_share=0.3)
    frames = lambda share: [f for st in make_stories(train, 200, seed=2, prefix="s", companion_share=share)
                            for f in st.frames]
    assert all(f.companion is None for f in frames(0.0)) and all(f.companion for f in frames(1.0))
    share = np.mean([f.companion is not None for f in frames(0.6)])
    assert abs(share - 0.6) < 0.05
    with pytest.raises(ValueError, match="companion_share"):
        make_stories(train, 1, seed=0, prefix="s", companion_share=1.5)


def test_the_protagonist_always_keeps_a_reference():
    train, _ = split_characters()
    with pytest.raises(ValueError, match="companion_references"):
        make_scenarios(train, 2, seed=0, prefix="s", references=2, companion_references=2)
    three = make_scenarios(train, 12, seed=4, prefix="s", references=3, companion_references=2,
                           companion_share=0.5)
    pair = next(sc for sc in three if sc.characters)
    assert pair.characters == [pair.asked.protagonist.key()] + [pair.asked.companion.key()] * 2
    assert pair.references[1] != pair.references[2]  # two different scenes of the companion


def test_the_scenarios_file_names_each_characters_images_and_round_create_records_them(settings, tmp_path):
    scenarios, single, pair = two_kinds()
    path = write_scenarios_file(scenarios, tmp_path / "inputs")
    lines = {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}
    for sc in single:
        assert lines[sc.key]["references"] == [f"{sc.story_id}-ref0.png", f"{sc.story_id}-ref1.png"]
    for sc in pair:
        refs = lines[sc.key]["references"]
        assert list(refs) == sc.characters  # protagonist first, then the companion
        companion_file = refs[sc.asked.companion.key()][0]
        drawn = np.asarray(Image.open(tmp_path / "inputs" / companion_file))
        assert np.array_equal(drawn, np.asarray(render(sc.references[1])))
        assert refs[sc.asked.protagonist.key()] == [f"{sc.story_id}-ref0.png"]
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r", path)
        stored = {sc.key: sc for sc in s.scalars(select(Scenario))}
        for sc in scenarios:
            refs = sorted(stored[sc.key].references, key=lambda r: r.position)
            assert [r.character for r in refs] == (sc.characters or [None, None])


def test_a_companion_drawn_alone_stands_where_it_stands_beside_the_protagonist():
    """Its own reference shows the companion in exactly the pixels it has in a two-character frame."""
    train, _ = split_characters()
    own = alone(train[3], "flat", random.Random(0))
    assert (own.protagonist, own.companion, own.style, own.count) == (train[3], None, "flat", 1)
    pair = Frame(train[5], "flat", own.sky, own.ground, "left", "small", train[3])
    protagonist_only = np.asarray(render(replace(pair, companion=None)))
    drawn, both = np.asarray(render(own)), np.asarray(render(pair))
    companion = np.any(drawn != np.asarray(render(replace(own, protagonist=train[7]))), axis=-1)
    assert companion[:, :32].sum() == 0 and companion.sum() > 20  # on the right half
    assert np.array_equal(drawn[companion], both[companion])  # the same pixels in the pair
    assert not np.array_equal(protagonist_only[companion], both[companion])
