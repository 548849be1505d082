"""Submitting a task: one judgment per shown task, however often the button fires."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from storyloop.annotator.work_queue import Task, release
from storyloop.db.judgments import JudgmentIn, submit_judgment
from storyloop.db.models import Outcome

# Offered as one-key reasons on the skip panel; any other text is accepted too.
SKIP_REASONS = ("an image is missing or broken", "references are unclear", "prompt is unclear", "cannot decide")


@dataclass(frozen=True)
class Submitted:
    judgment_id: int
    scenario_id: int
    revision: int
    outcome: Outcome
    created: bool  # False: this task was already submitted (a double click, a rerun, another tab)


def submit_task(session: Session, task: Task, skip_reason: str | None = None) -> Submitted:
    """Store the task's draft (or a skip with `skip_reason`) and release the annotator's lease."""
    if skip_reason is not None:
        outcome, labels = Outcome.skipped, {}
        skip_reason = skip_reason.strip()
    else:
        outcome, labels = task.draft.result()
    row, created = submit_judgment(session, JudgmentIn(
        scenario_id=task.scenario_id, user_id=task.user_id, idempotency_key=task.idempotency_key,
        outcome=outcome, shown_order=list(task.shown_order), shown_at=task.shown_at, labels=labels,
        skip_reason=skip_reason, active_seconds=round(task.touch(), 3)))
    release(session, task.user_id, task.scenario_id)
    return Submitted(row.id, row.scenario_id, row.revision, Outcome(row.outcome), created)
