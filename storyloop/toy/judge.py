"""A scripted annotator that judges toy candidates with the paper's hierarchy, through the app's code path.

1. Character consistency: the protagonist's identity attributes and the drawing style, as the
   readers see them, match the references' (renderer ground truth).
2. Anatomical integrity: the frame holds the number of characters asked for, and the readers are
   sure what they see (a malformed character reads with low confidence).
3. Aesthetics / prompt: among survivors, rank by how well sky and ground follow the prompt, then by
   reader confidence.

`noise` flips each pass/fail decision with that probability, to mimic disagreeing people.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from storyloop.toy.metrics import identity_match
from storyloop.toy.world import Frame

CONFIDENCE = 0.5  # below this on any identity head, the character is not well formed


@dataclass
class Verdict:
    consistency: bool
    anatomy: bool | None  # only asked after consistency passed
    score: float  # aesthetics/prompt score, higher is better (survivors are ranked by it)

    @property
    def level(self) -> int:
        """How far up the hierarchy it got: 0 failed consistency, 1 failed anatomy, 2 survived."""
        return 0 if not self.consistency else 1 if not self.anatomy else 2


def assess(reading: dict, asked: Frame, rng: random.Random | None = None, noise: float = 0.0) -> Verdict:
    def flip(x: bool) -> bool:
        return (not x) if rng is not None and rng.random() < noise else x

    consistent = identity_match(reading, asked.protagonist) == 1.0 and reading["style"] == asked.style
    consistent = flip(consistent)
    anatomy = None
    if consistent:
        sure = min(reading[f"{a}_p"] for a in ("shape", "color", "hat", "accessory")) >= CONFIDENCE
        anatomy = flip(reading["count"] == asked.count and sure)
    score = (reading["sky"] == asked.sky) + (reading["ground"] == asked.ground) + 0.5 * reading["sky_p"] + \
        0.5 * reading["ground_p"] + 0.25 * reading["shape_p"]
    if rng is not None and noise:
        score += rng.gauss(0, noise)
    return Verdict(consistent, anatomy, score)


def prefer(a: Verdict, b: Verdict) -> float:
    """1 if a is preferred to b by the hierarchy, 0 if b is, 0.5 for a tie."""
    if a.level != b.level:
        return float(a.level > b.level)
    if a.level < 2 or a.score == b.score:
        return 0.5
    return float(a.score > b.score)
