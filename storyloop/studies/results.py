"""A study's answers as tables, and the tables through the statistics (studies/stats.py) into its results.

Each annotator's latest revision of each item counts once; skips count for nothing. The tables have the
columns stats.py reads: pairwise (item, scenario, annotator, arm_left, arm_right, choice) and Likert
(item, scenario = the story, annotator, arm, criterion, score), one row per criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storyloop.db.models import Scenario, Study, StudyAnswer, StudyArm, StudyItem, StudyKind, User
from storyloop.studies.generate import get_study
from storyloop.studies.queue import CRITERIA

PAIRWISE_COLUMNS = ["item", "scenario", "annotator", "arm_left", "arm_right", "choice"]
LIKERT_COLUMNS = ["item", "scenario", "annotator", "arm", "criterion", "score"]
RESULT_KEYS = ("arms", "win_rate", "ci95", "bt_scores", "position_bias", "likert", "answers")


def latest_answers(session: Session, study_id: int) -> list[StudyAnswer]:
    """Each annotator's latest revision of each item of the study, skips included, in item order."""
    latest = (select(StudyAnswer.item_id, StudyAnswer.user_id, func.max(StudyAnswer.revision).label("rev"))
              .join(StudyItem, StudyItem.id == StudyAnswer.item_id).where(StudyItem.study_id == study_id)
              .group_by(StudyAnswer.item_id, StudyAnswer.user_id).subquery())
    return list(session.scalars(
        select(StudyAnswer).join(latest, (StudyAnswer.item_id == latest.c.item_id)
                                 & (StudyAnswer.user_id == latest.c.user_id) & (StudyAnswer.revision == latest.c.rev))
        .order_by(StudyAnswer.item_id, StudyAnswer.user_id)))


@dataclass
class AnswerFrames:
    pairwise: pd.DataFrame
    likert: pd.DataFrame
    skipped: int


def answer_frames(session: Session, study: Study) -> AnswerFrames:
    """The study's counted answers in the columns of stats.py, arms by name."""
    arms = dict(session.execute(select(StudyArm.id, StudyArm.name).where(StudyArm.study_id == study.id)).all())
    users = dict(session.execute(select(User.id, User.username)).all())
    items = {i.id: i for i in session.scalars(select(StudyItem).where(StudyItem.study_id == study.id))}
    keys = dict(session.execute(select(Scenario.id, Scenario.key).where(Scenario.round_id == study.round_id)).all())
    pairwise, likert, skipped = [], [], 0
    for a in latest_answers(session, study.id):
        if a.skip_reason is not None:
            skipped += 1
            continue
        item = items[a.item_id]
        if a.choice is not None:
            pairwise.append((item.key, keys[item.scenario_id], users[a.user_id], arms[a.left_arm_id],
                             arms[a.right_arm_id], a.choice.value))
        else:
            likert += [(item.key, item.story_id, users[a.user_id], arms[item.arm_a_id], c, getattr(a, c))
                       for c in CRITERIA]
    return AnswerFrames(pd.DataFrame(pairwise, columns=PAIRWISE_COLUMNS),
                        pd.DataFrame(likert, columns=LIKERT_COLUMNS).astype({"score": "int64"}), skipped)


def study_results(session: Session, name: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """The results of study `name`: the keys of RESULT_KEYS, plus the study's name, kind, agreement, skips and
    items. An empty study (no answers yet) has empty tables, not an error."""
    from storyloop.studies import stats

    study = get_study(session, name)
    frames = answer_frames(session, study)
    arms = [a.name for a in study.arms]
    out: dict = {"study": study.name, "kind": StudyKind(study.kind).value, "arms": arms, "win_rate": {}, "ci95": {},
                 "bt_scores": {}, "position_bias": None, "likert": {}, "agreement": None,
                 "answers": len(frames.pairwise) + len(frames.likert) // len(CRITERIA), "skipped": frames.skipped,
                 "items": session.scalar(select(func.count()).select_from(StudyItem)
                                         .where(StudyItem.study_id == study.id))}
    if not frames.pairwise.empty:
        rates = stats.win_rates(frames.pairwise, arms=arms, n_boot=n_boot, seed=seed)
        out["win_rate"] = rates
        out["ci95"] = {pair: r["ci95"] for pair, r in rates.items()}
        out["bt_scores"] = stats.bradley_terry(frames.pairwise, arms=arms, n_boot=max(1, n_boot // 5), seed=seed)
        out["position_bias"] = stats.position_bias(frames.pairwise, n_boot=n_boot, seed=seed)
        out["agreement"] = stats.pairwise_agreement(frames.pairwise)
    if not frames.likert.empty:
        out["likert"] = stats.likert_summary(frames.likert, arms=arms, n_boot=n_boot, seed=seed)
        out["agreement"] = stats.likert_agreement(frames.likert)
    return out
