"""The study keys and what they do: one rule for the answering pages and the toy world's scripted annotators.

Pairwise: one key answers (1 or ← left, 2 or → right, T tie, B both bad) and submits at once; S opens the
skip panel. Likert: the three criteria (character consistency, style consistency, aesthetics) are rated in
turn with 1–5, each press moving on to the next; Tab and Shift+Tab move between criteria without rating;
Backspace clears the current one; Enter submits once all three are rated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storyloop.db.models import StudyChoice
from storyloop.studies.queue import CRITERIA, LikertScores

PAIRWISE_KEYS = {"1": StudyChoice.left, "ArrowLeft": StudyChoice.left, "2": StudyChoice.right,
                 "ArrowRight": StudyChoice.right, "t": StudyChoice.tie, "b": StudyChoice.both_bad}
SKIP_KEY = "s"
UNDO_KEY = "u"
SCORE_KEYS = ("1", "2", "3", "4", "5")
LIKERT_INCOMPLETE = "Rate all three criteria first (1–5 each; Tab moves between them), then Enter."


def pairwise_choice(key: str) -> StudyChoice | None:
    """The answer a key gives on a pairwise item, or None for a key that answers nothing."""
    return PAIRWISE_KEYS.get(key)


@dataclass
class LikertDraft:
    """The ratings an annotator has given an item so far, and the criterion the keys act on."""

    scores: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(CRITERIA))
    current: int = 0

    def press(self, key: str, shift: bool = False) -> str:
        """Apply one key: "submit" when Enter finds all three rated, "incomplete" when it does not, else ""."""
        if key in SCORE_KEYS:
            self.scores[CRITERIA[self.current]] = int(key)
            self.current = min(self.current + 1, len(CRITERIA) - 1)
        elif key == "Tab":
            self.current = (self.current + (-1 if shift else 1)) % len(CRITERIA)
        elif key == "Backspace":
            self.scores[CRITERIA[self.current]] = None
        elif key == "Enter":
            return "submit" if self.complete else "incomplete"
        return ""

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.scores.values())

    def result(self) -> LikertScores:
        if not self.complete:
            raise ValueError(LIKERT_INCOMPLETE)
        return LikertScores(**self.scores)
