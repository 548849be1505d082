"""The attribute readers read every character: the companion's identity too, where there is one."""

import random

import pytest

from storyloop.toy.assets import READERS
from storyloop.toy.readers import HEADS, IGNORE, evaluate, labels, load_readers
from storyloop.toy.world import IDENTITY, STYLES, Character, Frame, all_characters, random_frame


@pytest.fixture(scope="module")
def readers():
    return load_readers(READERS)


def test_labels_leave_out_what_a_frame_does_not_have():
    hero, friend = Character("round", "red", "cap", "black", "scarf"), Character("tall", "blue", "none", "white", "bag")
    alone = labels(Frame(hero, "flat", "day", "grass", "left", "big"))
    assert all(alone[f"companion_{a}"] == IGNORE for a in IDENTITY)
    assert alone["hat_color"] == HEADS["hat_color"].index("black")
    pair = labels(Frame(hero, "flat", "day", "grass", "left", "big", friend))
    assert pair["companion_shape"] == HEADS["companion_shape"].index("tall")
    assert pair["count"] == HEADS["count"].index(2)
    assert pair["companion_hat_color"] == IGNORE  # no hat: its colour means nothing


def test_the_readers_read_both_characters_of_rendered_two_character_frames(readers):
    rng = random.Random(11)
    chars = all_characters()
    frames = [random_frame(rng, rng.choice(chars), rng.choice(STYLES), chars, two_prob=1.0) for _ in range(120)]
    accuracy = evaluate(readers, frames)
    assert min(accuracy[f"companion_{a}"] for a in IDENTITY) >= 0.85
    assert min(accuracy[a] for a in IDENTITY) >= 0.85 and accuracy["count"] >= 0.95
