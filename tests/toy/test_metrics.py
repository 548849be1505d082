"""Identity per character: exact metrics and judge verdicts on frames whose truth is known."""

from dataclasses import replace

import pytest

from storyloop.toy.assets import READERS
from storyloop.toy.judge import assess
from storyloop.toy.metrics import Evaluated, as_read, character_matches, story_metrics
from storyloop.toy.readers import HEADS, load_readers, read
from storyloop.toy.render import render
from storyloop.toy.world import IDENTITY, Character, Frame, all_characters

HERO = Character("round", "red", "cap", "black", "scarf")  # five attributes count (a hat: its colour counts)
FRIEND = Character("tall", "blue", "none", "white", "bag")  # four count (no hat: no hat colour)


def truth_reading(frame: Frame) -> dict:
    """What perfect readers report: the frame's truth, every head sure."""
    return {**frame.truth(), **{f"{k}_p": 1.0 for k in HEADS}}


def misread(reading: dict, role: str, **wrong) -> dict:
    prefix = "" if role == "protagonist" else f"{role}_"
    return {**reading, **{prefix + k: v for k, v in wrong.items()}}


PAIR = Frame(HERO, "flat", "day", "grass", "left", "big", FRIEND)
ALONE = Frame(HERO, "flat", "night", "sand", "right", "small")


def test_a_reading_holds_each_characters_identity():
    reading = truth_reading(PAIR)
    assert as_read(reading, "protagonist") == {a: getattr(HERO, a) for a in IDENTITY}
    assert as_read(reading, "companion") == {a: getattr(FRIEND, a) for a in IDENTITY}
    assert character_matches(reading, PAIR) == [1.0, 1.0] and character_matches(reading, ALONE) == [1.0]


def test_identity_cross_averages_the_characters_and_consistency_needs_every_one():
    drifted = misread(truth_reading(PAIR), "companion", shape="round", color="green")  # 2 of its 4 wrong
    assert character_matches(drifted, PAIR) == [1.0, 0.5]
    items = [Evaluated("s", PAIR, drifted), Evaluated("s", ALONE, truth_reading(ALONE))]
    m = story_metrics(items)
    assert m["identity_cross"] == 87.5  # frames (1 + 0.5) / 2 and 1
    assert m["identity_consistent"] == 50.0  # the drifting companion fails its frame
    assert m["identity_self"] == 100.0  # the two frames share only the protagonist, read alike
    assert m["count"] == m["style_cross"] == m["prompt"] == 100.0


def test_one_wrong_attribute_of_the_companion_still_passes_the_bar():
    reading = misread(truth_reading(PAIR), "companion", accessory="stick")  # 3 of 4 right: at the bar
    m = story_metrics([Evaluated("s", PAIR, reading)])
    assert (m["identity_cross"], m["identity_consistent"]) == (87.5, 100.0)


def test_identity_self_compares_a_companion_only_with_itself():
    same = Evaluated("s", PAIR, misread(truth_reading(PAIR), "companion", shape="round", color="green"))
    again = Evaluated("s", PAIR, truth_reading(PAIR))
    other = Frame(HERO, "flat", "day", "grass", "left", "big", Character("square", "green", "crown", "pink", "none"))
    stranger = Evaluated("s", other, truth_reading(other))
    # the companion's agreement: shape and colour differ, hat and accessory agree (no hat colour: a hat is "none")
    assert story_metrics([same, again])["identity_self"] == 75.0  # (1 + 2/4) / 2
    assert story_metrics([again, stranger])["identity_self"] == 100.0  # different companions: protagonist only


def test_the_judge_fails_a_candidate_when_any_character_drifts():
    good = assess(truth_reading(PAIR), PAIR)
    assert good.consistency and good.anatomy and good.level == 2 and good.likeness == 2.0
    companion_drifts = assess(misread(truth_reading(PAIR), "companion", shape="round", color="green"), PAIR)
    hero_drifts = assess(misread(truth_reading(PAIR), "protagonist", shape="tall", color="blue", hat="none"), PAIR)
    assert companion_drifts.level == hero_drifts.level == 0
    assert companion_drifts.likeness == 0.75 + 1  # the mean over characters, plus the style
    unsure = assess({**truth_reading(PAIR), "companion_hat_p": 0.3}, PAIR)  # a malformed companion
    assert unsure.consistency and not unsure.anatomy
    alone_unsure_companion = assess({**truth_reading(ALONE), "companion_hat_p": 0.3}, ALONE)
    assert alone_unsure_companion.level == 2  # no companion asked: its heads are not looked at


@pytest.fixture(scope="module")
def readers():
    return load_readers(READERS)


def differs_everywhere(ch: Character) -> Character:
    return next(c for c in all_characters() if all(getattr(c, a) != getattr(ch, a) for a in IDENTITY))


@pytest.mark.parametrize("style", ["flat", "outlined", "striped", "pastel"])
def test_rendered_frames_read_per_character_and_a_stranger_companion_fails(readers, style):
    """Rendered truth passes; the same frame with a stranger as companion reads its protagonist as right,
    the companion as wrong, and fails consistency."""
    frame = replace(PAIR, style=style)
    swapped = replace(frame, companion=differs_everywhere(FRIEND))
    truth, other = read(readers, [render(frame), render(swapped)])
    assert assess(truth, frame).level == 2
    hero, friend = character_matches(other, frame)
    assert hero >= 0.8 and friend <= 0.25 and not assess(other, frame).consistency
