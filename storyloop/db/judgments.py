"""Recording judgments: validated against the hierarchy, idempotent, append-only with revisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storyloop.db.models import Candidate, Judgment, JudgmentLabel, Outcome, Scenario, User, utcnow


class JudgmentError(ValueError):
    """A judgment that contradicts the protocol or the scenario; nothing was written."""


@dataclass(frozen=True)
class Label:
    """One candidate's labels, in the order the protocol asks them."""

    consistency_pass: bool
    anatomy_pass: bool | None = None
    aesthetics_rank: int | None = None


@dataclass
class JudgmentIn:
    """What an annotator submits for one scenario."""

    scenario_id: int
    user_id: int
    idempotency_key: str
    outcome: Outcome
    shown_order: list[int]
    shown_at: datetime
    labels: dict[int, Label] = field(default_factory=dict)  # candidate id -> labels
    skip_reason: str | None = None
    active_seconds: float | None = None  # time spent judging, idle gaps left out (None: not measured)


def validate(judgment: JudgmentIn, candidate_ids: set[int]) -> None:
    """Check `judgment` against the protocol: consistency, then anatomy, then aesthetics."""
    j = judgment
    outcome = Outcome(j.outcome)
    if not j.idempotency_key or len(j.idempotency_key) > 64:
        raise JudgmentError("idempotency key must be 1-64 characters")
    if sorted(j.shown_order) != sorted(candidate_ids):
        raise JudgmentError("shown order must list each of the scenario's candidates exactly once")
    if outcome is Outcome.skipped:
        if not (j.skip_reason or "").strip():
            raise JudgmentError("a skip needs a reason")
        if j.labels:
            raise JudgmentError("a skipped judgment carries no labels")
        return
    if j.skip_reason:
        raise JudgmentError("only a skipped judgment has a skip reason")
    if set(j.labels) != candidate_ids:
        missing = sorted(candidate_ids - set(j.labels))
        extra = sorted(set(j.labels) - candidate_ids)
        raise JudgmentError(f"labels must cover exactly the scenario's candidates (missing {missing}, "
                            f"not in scenario {extra})")
    for cid, lab in j.labels.items():
        if not lab.consistency_pass and lab.anatomy_pass is not None:
            raise JudgmentError(f"candidate {cid}: anatomy is judged only after consistency passed")
        if lab.consistency_pass and lab.anatomy_pass is None:
            raise JudgmentError(f"candidate {cid}: passed consistency, so anatomy must be judged")
        if lab.aesthetics_rank is not None and not lab.anatomy_pass:
            raise JudgmentError(f"candidate {cid}: only candidates that passed both checks are ranked")
    survivors = [cid for cid, lab in j.labels.items() if lab.anatomy_pass]
    ranks = sorted(lab.aesthetics_rank for lab in j.labels.values() if lab.aesthetics_rank is not None)
    if outcome is Outcome.all_bad and survivors:
        raise JudgmentError("'all bad' means no candidate passed both checks")
    if outcome is Outcome.tie and (len(survivors) < 2 or ranks):
        raise JudgmentError("a tie needs at least two survivors and no ranks")
    if outcome is Outcome.ranked:
        if not survivors:
            raise JudgmentError("a ranked judgment needs at least one survivor")
        if not ranks or ranks[0] != 1 or len(set(ranks)) != len(ranks) or ranks[-1] > len(survivors):
            raise JudgmentError("ranks must be distinct, start at 1 (the best) and not exceed the survivors")


def submit_judgment(session: Session, judgment: JudgmentIn, max_attempts: int = 5) -> tuple[Judgment, bool]:
    """Store `judgment` as the annotator's next revision for the scenario.

    Returns (row, created). A resubmission with the same idempotency key returns the stored row
    and created=False, whatever else it carries: a rerun or a double click is a no-op.
    """
    _lock_revisions(session, judgment.scenario_id, judgment.user_id)
    if (done := _by_key(session, judgment.idempotency_key)) is not None:
        return done, False
    # Read in this write transaction: an account disabled a moment ago stores nothing more.
    user = session.get(User, judgment.user_id, populate_existing=True)
    if user is None or not user.is_active:
        raise JudgmentError("this account is disabled: the judgment was not stored")
    scenario = session.get(Scenario, judgment.scenario_id)
    if scenario is None:
        raise JudgmentError(f"no scenario with id {judgment.scenario_id}")
    candidate_ids = set(session.scalars(select(Candidate.id).where(Candidate.scenario_id == scenario.id)))
    validate(judgment, candidate_ids)
    for _ in range(max_attempts):
        revision = 1 + (session.scalar(
            select(func.max(Judgment.revision)).where(Judgment.scenario_id == judgment.scenario_id,
                                                      Judgment.user_id == judgment.user_id)) or 0)
        row = Judgment(
            scenario_id=judgment.scenario_id, user_id=judgment.user_id, revision=revision,
            idempotency_key=judgment.idempotency_key, outcome=Outcome(judgment.outcome),
            skip_reason=judgment.skip_reason if judgment.outcome == Outcome.skipped else None,
            shown_order=list(judgment.shown_order), shown_at=judgment.shown_at, submitted_at=utcnow(),
            active_seconds=judgment.active_seconds,
            labels=[JudgmentLabel(candidate_id=cid, consistency_pass=lab.consistency_pass,
                                  anatomy_pass=lab.anatomy_pass, aesthetics_rank=lab.aesthetics_rank)
                    for cid, lab in sorted(judgment.labels.items())])
        try:
            with session.begin_nested():
                session.add(row)
            return row, True
        except IntegrityError:
            # Either the same submit landed meanwhile (idempotency key), or another tab took this
            # revision number: the first is a no-op, the second is retried as the next revision.
            if (done := _by_key(session, judgment.idempotency_key)) is not None:
                return done, False
    raise JudgmentError("could not store the judgment: too many concurrent edits of this scenario")


def _lock_revisions(session: Session, scenario_id: int, user_id: int) -> None:
    """Serialise writers of one (scenario, annotator) until commit, so revision numbers never collide.

    SQLite already serialises writers (BEGIN IMMEDIATE); PostgreSQL takes a transaction-scoped
    advisory lock on the pair.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:s, :u)"), {"s": scenario_id, "u": user_id})


def _by_key(session: Session, key: str) -> Judgment | None:
    return session.scalar(select(Judgment).where(Judgment.idempotency_key == key))


def current_judgments(session: Session, scenario_id: int) -> list[Judgment]:
    """Each annotator's latest revision for the scenario."""
    latest = (select(Judgment.user_id, func.max(Judgment.revision).label("rev"))
              .where(Judgment.scenario_id == scenario_id).group_by(Judgment.user_id).subquery())
    return list(session.scalars(
        select(Judgment).join(latest, (Judgment.user_id == latest.c.user_id)
                              & (Judgment.revision == latest.c.rev))
        .where(Judgment.scenario_id == scenario_id).order_by(Judgment.user_id)))


def history(session: Session, scenario_id: int, user_id: int) -> list[Judgment]:
    """All revisions an annotator made of a scenario, oldest first."""
    return list(session.scalars(select(Judgment).where(Judgment.scenario_id == scenario_id,
                                                       Judgment.user_id == user_id)
                                .order_by(Judgment.revision)))
