"""Exact toy counterparts of ViStoryBench's metrics, from the attribute readers.

identity cross  - share of the protagonist's identity attributes a frame gets right vs the references (CIDS cross)
identity self   - share of identity attributes two frames of one story agree on                   (CIDS self)
style cross     - frames drawn in the references' style                                            (CSD cross)
style self      - pairs of frames of one story drawn in the same style                             (CSD self)
prompt          - sky and ground as the prompt says                                                (alignment)
count           - number of characters as the prompt says                                          (OCCM)
All in percent.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from storyloop.toy.world import IDENTITY, Character, Frame


def identity_match(reading: dict, character: Character) -> float:
    """Share of identity attributes read as the character has them (hat colour only where there is a hat)."""
    keys = [a for a in IDENTITY if a != "hat_color" or character.hat != "none"]
    return sum(reading[a] == getattr(character, a) for a in keys) / len(keys)


def identity_agreement(a: dict, b: dict) -> float:
    keys = [k for k in IDENTITY if k != "hat_color" or (a["hat"] != "none" and b["hat"] != "none")]
    return sum(a[k] == b[k] for k in keys) / len(keys)


@dataclass
class Evaluated:
    story_id: str
    frame: Frame  # what was asked: the protagonist (from the references), style, scene, count
    reading: dict  # what the readers see in the generated image


def story_metrics(items: list[Evaluated]) -> dict[str, float]:
    by_story: dict[str, list[Evaluated]] = defaultdict(list)
    for it in items:
        by_story[it.story_id].append(it)
    pairs = [p for group in by_story.values() for p in itertools.combinations(group, 2)]

    def pct(values) -> float:
        values = list(values)
        return round(100 * sum(values) / len(values), 2) if values else float("nan")

    return {
        "identity_cross": pct(identity_match(it.reading, it.frame.protagonist) for it in items),
        "identity_self": pct(identity_agreement(a.reading, b.reading) for a, b in pairs),
        "style_cross": pct(it.reading["style"] == it.frame.style for it in items),
        "style_self": pct(a.reading["style"] == b.reading["style"] for a, b in pairs),
        "prompt": pct((it.reading["sky"] == it.frame.sky) / 2 + (it.reading["ground"] == it.frame.ground) / 2
                      for it in items),
        "count": pct(it.reading["count"] == it.frame.count for it in items),
    }
