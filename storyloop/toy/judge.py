"""A scripted annotator that judges toy candidates with the paper's hierarchy, through the app's code path.

1. Character consistency: every character's identity attributes (the protagonist's, and the
   companion's in a two-character frame) and the drawing style, as the readers see them, match the
   references' (renderer ground truth). A candidate fails if any character drifts.
2. Anatomical integrity: the frame holds the number of characters asked for, and the readers are
   sure what they see of each (a malformed character reads with low confidence).
3. Aesthetics / prompt: among survivors, rank by how well sky and ground follow the prompt, then by
   reader confidence.

`noise` is the probability of each decision going wrong, to mimic disagreeing people: a pass/fail
flips, or the aesthetics pick is not the best survivor. It is one probability at every level, so an
annotator with 5 % noise picks the best survivor 95 % of the time (noise added to the score itself
would not do that: the scores of survivors differ by a few hundredths, so any visible noise on them
turns the ranking into a coin toss).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from storyloop.toy.metrics import character_matches, every_character_consistent
from storyloop.toy.world import Frame

CONFIDENCE = 0.5  # below this on any identity head, the character is not well formed
SURE_OF = ("shape", "color", "hat", "accessory")  # the heads whose confidence says a character is well formed


@dataclass
class Verdict:
    consistency: bool
    anatomy: bool | None  # only asked after consistency passed
    score: float  # aesthetics/prompt score, higher is better (survivors are ranked by it)
    # Identity attributes matched (the mean over the frame's characters), plus the style (0..2): how close
    # to the references.
    likeness: float = 0.0

    @property
    def level(self) -> int:
        """How far up the hierarchy it got: 0 failed consistency, 1 failed anatomy, 2 survived."""
        return 0 if not self.consistency else 1 if not self.anatomy else 2


def assess(reading: dict, asked: Frame, rng: random.Random | None = None, noise: float = 0.0) -> Verdict:
    def flip(x: bool) -> bool:
        return (not x) if rng is not None and rng.random() < noise else x

    matches = character_matches(reading, asked)
    likeness = sum(matches) / len(matches) + (reading["style"] == asked.style)
    consistent = flip(every_character_consistent(reading, asked) and reading["style"] == asked.style)
    anatomy = None
    if consistent:
        prefixes = ["" if role == "protagonist" else f"{role}_" for role, _ in asked.cast]
        sure = min(reading[f"{p}{a}_p"] for p in prefixes for a in SURE_OF) >= CONFIDENCE
        anatomy = flip(reading["count"] == asked.count and sure)
    score = (reading["sky"] == asked.sky) + (reading["ground"] == asked.ground) + 0.5 * reading["sky_p"] + \
        0.5 * reading["ground_p"] + 0.25 * reading["shape_p"]
    return Verdict(consistent, anatomy, score, likeness)


def aesthetic_ranking(scores: list[float], rng: random.Random | None = None, noise: float = 0.0) -> list[int]:
    """Indices of the survivors, best first by score; with probability `noise` the best two trade places."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if rng is not None and len(order) > 1 and rng.random() < noise:
        order[0], order[1] = order[1], order[0]
    return order


def prefer(a: Verdict, b: Verdict) -> float:
    """Pairwise preference by the hierarchy: 1 if a is preferred, 0 if b is, 0.5 for a tie.

    Level first (consistency, then anatomy); two frames that fail at the same level are compared by
    how close they come to the references (likeness), then by the aesthetics/prompt score.
    """
    for x, y in ((a.level, b.level), (a.likeness, b.likeness), (a.score, b.score)):
        if x != y:
            return float(x > y)
    return 0.5


def compare(a: dict, b: dict, asked: Frame, rng: random.Random | None = None, noise: float = 0.0) -> float:
    """Two readings of one scenario's frames judged against what it asked (`asked`): 1 if a is preferred, 0 if
    b is, 0.5 for a tie. The one comparison behind every toy win rate (validation and the held-out study)."""
    return prefer(assess(a, asked, rng, noise), assess(b, asked, rng, noise))
