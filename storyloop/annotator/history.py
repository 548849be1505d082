"""An annotator's own recent judgments, and reopening one of them as an edit (a new revision)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storyloop.annotator.protocol import Draft
from storyloop.annotator.work_queue import Task, aware
from storyloop.annotator.stats import judging_seconds
from storyloop.db.models import Judgment, Outcome, Round, Scenario, utcnow


@dataclass(frozen=True)
class HistoryRow:
    scenario_id: int
    scenario_key: str
    round_name: str
    prompt: str
    revision: int
    outcome: Outcome
    best_positions: list[int]  # 1-based places in the grid the annotator saw
    failed_positions: list[int]
    skip_reason: str | None
    submitted_at: datetime
    seconds: float  # spent judging (annotator.stats.judging_seconds)


def my_history(session: Session, user_id: int, limit: int = 50) -> list[HistoryRow]:
    """The annotator's latest revision of each scenario they judged, most recent first. Only their own."""
    latest = (select(Judgment.scenario_id, func.max(Judgment.revision).label("rev"))
              .where(Judgment.user_id == user_id).group_by(Judgment.scenario_id).subquery())
    rows = session.execute(
        select(Judgment, Scenario.key, Scenario.prompt, Round.name)
        .join(latest, (Judgment.scenario_id == latest.c.scenario_id) & (Judgment.revision == latest.c.rev))
        .join(Scenario, Scenario.id == Judgment.scenario_id).join(Round, Round.id == Scenario.round_id)
        .where(Judgment.user_id == user_id)
        .order_by(Judgment.submitted_at.desc(), Judgment.id.desc()).limit(limit)).all()
    out = []
    for j, key, prompt, round_name in rows:
        place = {cid: i + 1 for i, cid in enumerate(j.shown_order)}
        best = [place[l.candidate_id] for l in j.labels
                if l.aesthetics_rank == 1 or (j.outcome == Outcome.tie and l.anatomy_pass)]
        failed = [place[l.candidate_id] for l in j.labels if not l.consistency_pass or l.anatomy_pass is False]
        out.append(HistoryRow(j.scenario_id, key, round_name, prompt, j.revision, Outcome(j.outcome),
                              sorted(best), sorted(failed), j.skip_reason, aware(j.submitted_at),
                              judging_seconds(j.shown_at, j.submitted_at, j.active_seconds)))
    return out


def edit_task(session: Session, user_id: int, scenario_id: int, now: datetime | None = None) -> Task:
    """A task that reopens the annotator's latest judgment of the scenario, labels filled in.

    Its submit is the next revision; the earlier ones stay. Raises LookupError if there is none.
    """
    last = session.scalar(select(Judgment).where(Judgment.scenario_id == scenario_id, Judgment.user_id == user_id)
                          .order_by(Judgment.revision.desc()).limit(1))
    if last is None:
        raise LookupError(f"you have not judged scenario {scenario_id}")
    scenario = session.get(Scenario, scenario_id)
    order = [cid for cid in last.shown_order]
    order += [c.id for c in scenario.candidates if c.id not in order]  # candidates added since
    task = Task(scenario_id, user_id, scenario.round_id, last.revision, order, now or utcnow())
    draft = Draft.from_judgment(last)
    task.draft = Draft(order=order, step=draft.step, consistency=draft.consistency, anatomy=draft.anatomy,
                       ranking=draft.ranking, tie=draft.tie)
    return task
