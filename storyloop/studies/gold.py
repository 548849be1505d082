"""Gold items of a study: a researcher's expected answer, and how well each annotator matches them.

A pairwise gold answer names the better arm (sides are drawn per annotator, so a side would mean nothing), or
tie / both bad; an answer matches when it picks that arm (or says the same tie / both bad). A Likert gold answer
holds the three scores; an answer matches when each of its scores is within one point.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import GoldVerdict, StudyAnswer, StudyChoice, StudyGoldAnswer, StudyItem, User
from storyloop.studies.errors import StudyError
from storyloop.studies.queue import CRITERIA, LikertScores


def set_study_gold(session: Session, item_id: int, *, preferred_arm_id: int | None = None,
                   verdict: GoldVerdict | str | None = None, scores: LikertScores | None = None,
                   created_by: int | None = None, notes: str | None = None) -> StudyGoldAnswer:
    """Make (or replace) an item's gold answer: `preferred_arm_id`, or verdict tie / both_bad (pairwise); or
    `scores` (Likert)."""
    item = session.get(StudyItem, item_id)
    if item is None:
        raise StudyError(f"no study item {item_id}")
    values = {"preferred_arm_id": None, "verdict": None, "cc": None, "sc": None, "sa": None}
    if item.scenario_id is not None:
        if scores is not None:
            raise StudyError("a pairwise gold answer names an arm, or tie / both bad")
        if preferred_arm_id is not None:
            if preferred_arm_id not in (item.arm_a_id, item.arm_b_id) or verdict not in (None, GoldVerdict.arm, "arm"):
                raise StudyError("the preferred arm must be one of the item's two arms")
            values.update(verdict=GoldVerdict.arm, preferred_arm_id=preferred_arm_id)
        elif verdict in (GoldVerdict.tie, GoldVerdict.both_bad, "tie", "both_bad"):
            values["verdict"] = GoldVerdict(verdict)
        else:
            raise StudyError("a pairwise gold answer needs a preferred arm, or verdict tie / both_bad")
    else:
        if scores is None or verdict is not None or preferred_arm_id is not None:
            raise StudyError("a Likert gold answer is three scores (cc, sc, sa)")
        for name in CRITERIA:
            value = getattr(scores, name)
            if not isinstance(value, int) or not 1 <= value <= 5:
                raise StudyError(f"gold {name} must be a whole number from 1 to 5")
            values[name] = value
    gold = session.scalar(select(StudyGoldAnswer).where(StudyGoldAnswer.item_id == item_id))
    if gold is None:
        gold = StudyGoldAnswer(item_id=item_id)
        session.add(gold)
    for key, value in values.items():
        setattr(gold, key, value)
    gold.created_by, gold.notes = created_by, notes
    session.flush()
    return gold


def matches_gold(answer: StudyAnswer, gold: StudyGoldAnswer) -> bool:
    if gold.verdict is None:
        return all(abs(getattr(answer, c) - getattr(gold, c)) <= 1 for c in CRITERIA)
    if answer.choice in (StudyChoice.left, StudyChoice.right):
        chosen = answer.left_arm_id if answer.choice == StudyChoice.left else answer.right_arm_id
        return gold.verdict == GoldVerdict.arm and chosen == gold.preferred_arm_id
    return gold.verdict.value == StudyChoice(answer.choice).value


@dataclass(frozen=True)
class GoldScore:
    username: str
    answered: int  # gold items answered (latest revisions, skips left out)
    matched: int

    @property
    def accuracy(self) -> float | None:
        return self.matched / self.answered if self.answered else None


def study_gold_scores(session: Session, study_id: int) -> list[GoldScore]:
    """Each annotator's latest answers to the study's gold items, against the gold."""
    golds = {g.item_id: g for g in session.scalars(select(StudyGoldAnswer).join(StudyItem)
                                                     .where(StudyItem.study_id == study_id))}
    latest: dict[tuple[int, int], StudyAnswer] = {}
    for a in session.scalars(select(StudyAnswer).where(StudyAnswer.item_id.in_(golds)).order_by(StudyAnswer.revision)):
        latest[a.item_id, a.user_id] = a
    per_user: dict[int, list[bool]] = {}
    for (item_id, user_id), a in latest.items():
        if a.skip_reason is None:
            per_user.setdefault(user_id, []).append(matches_gold(a, golds[item_id]))
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(per_user))).all())
    return sorted((GoldScore(names[u], len(v), sum(v)) for u, v in per_user.items()), key=lambda g: g.username)
