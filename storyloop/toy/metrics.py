"""Exact toy counterparts of ViStoryBench's metrics, from the attribute readers.

Identity is read per character, as ViStoryBench's CIDS matches each character it detects: a frame's
characters are its protagonist and, in a two-character frame, its companion (the readers report the
companion's attributes as companion_<attribute>).

identity cross      - share of each character's identity attributes a frame gets right vs the character's
                      references, averaged over the frame's characters, then over frames          (CIDS cross)
identity self       - share of identity attributes two frames of one story agree on, for each character
                      both frames ask for (the protagonist always), averaged likewise               (CIDS self)
identity consistent - frames in which *every* character matches its references on at least CONSISTENT
                      of its identity attributes (the scripted judge's bar: one drifting character
                      fails the frame)
style cross         - frames drawn in the references' style                                          (CSD cross)
style self          - pairs of frames of one story drawn in the same style                           (CSD self)
prompt              - sky and ground as the prompt says                                              (alignment)
count               - number of characters as the prompt says                                        (OCCM)
All in percent. On frames of one character each, identity cross and self are what they were before
characters had their own references.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from storyloop.toy.world import IDENTITY, Character, Frame

CONSISTENT = 0.6  # share of a character's identity attributes that must match its references (3 of 5)


def as_read(reading: dict, role: str) -> dict:
    """One character's identity from a reading: the protagonist's attributes as they are, the companion's
    from companion_<attribute>, both under the attribute names."""
    prefix = "" if role == "protagonist" else f"{role}_"
    return {a: reading[prefix + a] for a in IDENTITY}


def identity_match(reading: dict, character: Character) -> float:
    """Share of identity attributes read as the character has them (hat colour only where there is a hat).
    `reading` holds one character's attributes under the attribute names (see `as_read`)."""
    keys = [a for a in IDENTITY if a != "hat_color" or character.hat != "none"]
    return sum(reading[a] == getattr(character, a) for a in keys) / len(keys)


def identity_agreement(a: dict, b: dict) -> float:
    keys = [k for k in IDENTITY if k != "hat_color" or (a["hat"] != "none" and b["hat"] != "none")]
    return sum(a[k] == b[k] for k in keys) / len(keys)


def character_matches(reading: dict, asked: Frame) -> list[float]:
    """Identity match of each character the frame asks for, in cast order (protagonist, companion)."""
    return [identity_match(as_read(reading, role), character) for role, character in asked.cast]


def every_character_consistent(reading: dict, asked: Frame) -> bool:
    """Whether no character drifts: each matches its references on at least CONSISTENT of its attributes."""
    return all(m >= CONSISTENT for m in character_matches(reading, asked))


def frame_agreement(a: Evaluated, b: Evaluated) -> float:
    """Identity agreement of two frames of a story, averaged over the characters both ask for (the same
    character in the same role)."""
    shared = [role for role, character in a.frame.cast if dict(b.frame.cast).get(role) == character]
    return sum(identity_agreement(as_read(a.reading, r), as_read(b.reading, r)) for r in shared) / len(shared)


@dataclass
class Evaluated:
    story_id: str
    frame: Frame  # what was asked: its characters (from the references), style, scene, count
    reading: dict  # what the readers see in the generated image


def story_metrics(items: list[Evaluated]) -> dict[str, float]:
    by_story: dict[str, list[Evaluated]] = defaultdict(list)
    for it in items:
        by_story[it.story_id].append(it)
    pairs = [p for group in by_story.values() for p in itertools.combinations(group, 2)]

    def pct(values) -> float:
        values = list(values)
        return round(100 * sum(values) / len(values), 2) if values else float("nan")

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {
        "identity_cross": pct(mean(character_matches(it.reading, it.frame)) for it in items),
        "identity_self": pct(frame_agreement(a, b) for a, b in pairs),
        "identity_consistent": pct(every_character_consistent(it.reading, it.frame) for it in items),
        "style_cross": pct(it.reading["style"] == it.frame.style for it in items),
        "style_self": pct(a.reading["style"] == b.reading["style"] for a, b in pairs),
        "prompt": pct((it.reading["sky"] == it.frame.sky) / 2 + (it.reading["ground"] == it.frame.ground) / 2
                      for it in items),
        "count": pct(it.reading["count"] == it.frame.count for it in items),
    }
