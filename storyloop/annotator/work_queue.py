"""Who judges what next: leases, the k-judgments target, the skip policy and gold items.

An annotator gets, in the newest round that has work for them:
1. the scenario they already hold an unexpired lease on (a reload or a second tab resumes it, with the
   marks made so far: the page stores the draft on the lease as it changes);
2. a gold scenario they have not judged, while their share of gold is below the round's gold rate
   (so gold comes first, then at that rate);
3. otherwise the open scenario closest to done (most judgments, then story order) that they have not
   judged. A scenario is open while its judgments plus other annotators' live leases are below k.
Leases expire after a TTL, so a scenario someone walked away from goes back to the queue.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, event, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storyloop.annotator.protocol import Draft
from storyloop.db.models import (Candidate, GoldAnswer, Judgment, Lease, Outcome, Round, Scenario, SkipPolicy,
                                 utcnow)
from storyloop.queueing import LEASE_TTL, OpenItems, aware  # noqa: F401  (pages import them from here)

# A longer gap between two actions on a task is a pause (a break, another window), not judging: it counts this much.
IDLE_GAP = timedelta(seconds=60)


@dataclass
class Task:
    """One scenario shown to one annotator: what the page needs to judge it and to submit once."""

    scenario_id: int
    user_id: int
    round_id: int
    base_revision: int  # the annotator's latest revision of this scenario when shown (0: new)
    shown_order: list[int]
    shown_at: datetime
    is_gold: bool = False
    draft: Draft = field(init=False)
    skipping: bool = False  # the skip-reason panel is open
    leased: bool = False  # shown on the annotator's lease (next_task); an edit holds none, so keeps no draft
    saved_state: dict | None = field(default=None, repr=False)  # the draft as last stored on the lease
    # The newest key press (its seq, annotator/keys.py) whose effect is in the draft: stored with the marks in one
    # UPDATE, so a tab that reconnects to a restarted server sends on exactly the presses made after it.
    keys_applied: int = 0
    # Time spent judging so far (stored with the draft): each gap between two actions on the task counts up to
    # IDLE_GAP; a new page session (a reload, a tab reopened after a break) starts a new gap at zero.
    active_seconds: float = 0.0
    last_active: float | None = field(default=None, repr=False)  # time.monotonic() of the last action here

    def __post_init__(self):
        self.draft = Draft(order=list(self.shown_order))

    def touch(self, now: float | None = None) -> float:
        """Count the time since the last action on this task (up to IDLE_GAP) as judging; the total so far."""
        now = time.monotonic() if now is None else now
        if self.last_active is not None:
            self.active_seconds += min(max(now - self.last_active, 0.0), IDLE_GAP.total_seconds())
        self.last_active = now
        return self.active_seconds

    def draft_unsaved(self) -> bool:
        """Whether the lease should get this draft: marks changed since it was last stored (or read)."""
        return self.leased and self.draft.to_state() != self.saved_state

    @property
    def idempotency_key(self) -> str:
        """Same for every tab and rerun that shows this revision of this scenario to this annotator.

        Two tabs showing one task submit under one key, so the second submit is a no-op rather than
        a second judgment; an edit is based on a later revision and so gets a new key.
        """
        return f"j-{self.user_id}-{self.scenario_id}-{self.base_revision + 1}"

    @property
    def is_edit(self) -> bool:
        return self.base_revision > 0


def shown_order(candidate_ids: list[int], user_id: int, scenario_id: int, base_revision: int) -> list[int]:
    """A shuffled order (against position bias), stable for this annotator and revision, so a reload
    shows the same grid."""
    order = sorted(candidate_ids)
    random.Random(f"{user_id}:{scenario_id}:{base_revision}").shuffle(order)
    return order


@dataclass
class RoundQueue(OpenItems):
    """The state of one round's queue as seen by one annotator (items are scenarios with candidates, in story
    order); the policy is storyloop/queueing.py's."""

    round: Round | None = None
    mine: dict[int, Outcome] = field(default_factory=dict)  # scenario -> the annotator's latest outcome

    @property
    def scenario_ids(self) -> list[int]:
        return self.item_ids


def round_queue(session: Session, rnd: Round, user_id: int, now: datetime | None = None) -> RoundQueue:
    now = now or utcnow()
    has_candidates = exists().where(Candidate.scenario_id == Scenario.id)
    scenario_ids = list(session.scalars(select(Scenario.id).where(Scenario.round_id == rnd.id, has_candidates)
                                        .order_by(Scenario.story_id, Scenario.frame_index, Scenario.id)))
    gold_ids = set(session.scalars(select(GoldAnswer.scenario_id).join(Scenario)
                                   .where(Scenario.round_id == rnd.id)))
    counts_skips = rnd.skip_policy == SkipPolicy.counts
    done: Counter = Counter()
    mine: dict[int, Outcome] = {}
    for sid, uid, outcome in _latest_outcomes(session, rnd.id):
        if outcome != Outcome.skipped or counts_skips:
            done[sid] += 1
        if uid == user_id:
            mine[sid] = Outcome(outcome)
    leased = Counter(session.scalars(
        select(Lease.scenario_id).join(Scenario)
        .where(Scenario.round_id == rnd.id, Lease.user_id != user_id, Lease.expires_at > now)))
    return RoundQueue(user_id, scenario_ids, gold_ids, done, leased, {sid: o == Outcome.skipped for sid, o in mine.items()},
                      rnd.judgments_per_scenario, rnd.gold_rate, rnd.skip_policy, round=rnd, mine=mine)


def _latest_outcomes(session: Session, round_id: int, scenario_id: int | None = None):
    """(scenario, annotator, outcome of their latest revision) for the round's judgments."""
    latest = (select(Judgment.scenario_id, Judgment.user_id, func.max(Judgment.revision).label("rev"))
              .join(Scenario, Scenario.id == Judgment.scenario_id).where(Scenario.round_id == round_id))
    if scenario_id is not None:
        latest = latest.where(Judgment.scenario_id == scenario_id)
    latest = latest.group_by(Judgment.scenario_id, Judgment.user_id).subquery()
    return session.execute(
        select(Judgment.scenario_id, Judgment.user_id, Judgment.outcome)
        .join(latest, and_(Judgment.scenario_id == latest.c.scenario_id, Judgment.user_id == latest.c.user_id,
                           Judgment.revision == latest.c.rev))).all()


def rounds_newest_first(session: Session) -> list[Round]:
    return list(session.scalars(select(Round).order_by(Round.created_at.desc(), Round.id.desc())))


def next_task(session: Session, user_id: int, round_id: int | None = None, now: datetime | None = None,
              ttl: timedelta = LEASE_TTL) -> Task | None:
    """The scenario this annotator should judge now, leased to them for `ttl`; None when nothing is left."""
    now = now or utcnow()
    held = _held_lease(session, user_id, round_id, now)
    if held is not None:
        return _task(session, held, user_id)
    rounds = [session.get(Round, round_id)] if round_id is not None else rounds_newest_first(session)
    for rnd in rounds:
        if rnd is None:
            continue
        queue = round_queue(session, rnd, user_id, now)
        for sid in queue.candidates():
            if queue.is_regular(sid) and not _still_open(session, queue, sid, now):
                continue  # taken meanwhile by someone else
            return _task(session, _take_lease(session, sid, user_id, now, ttl), user_id)
    return None


def _held_lease(session: Session, user_id: int, round_id: int | None, now: datetime) -> Lease | None:
    query = (select(Lease).join(Scenario).where(Lease.user_id == user_id, Lease.expires_at > now)
             .order_by(Lease.leased_at))
    if round_id is not None:
        query = query.where(Scenario.round_id == round_id)
    return session.scalars(query).first()


def _still_open(session: Session, queue: RoundQueue, sid: int, now: datetime) -> bool:
    # Lock the scenario row so that two annotators racing for its last slot are served one at a
    # time on PostgreSQL (SQLite writers are already serialised by BEGIN IMMEDIATE).
    session.execute(select(Scenario.id).where(Scenario.id == sid).with_for_update())
    counts_skips = queue.round.skip_policy == SkipPolicy.counts
    done = sum(1 for _, _, o in _latest_outcomes(session, queue.round.id, sid)
               if o != Outcome.skipped or counts_skips)
    leased = session.scalar(select(func.count()).select_from(Lease).where(
        Lease.scenario_id == sid, Lease.user_id != queue.user_id, Lease.expires_at > now))
    return done + leased < queue.k


def _take_lease(session: Session, sid: int, user_id: int, now: datetime, ttl: timedelta) -> Lease:
    lease = session.scalar(select(Lease).where(Lease.scenario_id == sid, Lease.user_id == user_id))
    if lease is None:
        try:
            with session.begin_nested():
                lease = Lease(scenario_id=sid, user_id=user_id, leased_at=now, expires_at=now + ttl)
                session.add(lease)
            return lease
        except IntegrityError:  # the same annotator's other tab leased it a moment ago
            lease = session.scalar(select(Lease).where(Lease.scenario_id == sid, Lease.user_id == user_id))
    if aware(lease.expires_at) <= now:
        lease.leased_at = now  # an expired lease starts afresh: the time shown is now, and no old marks
        lease.draft = None
    lease.expires_at = now + ttl
    session.flush()
    return lease


def _task(session: Session, lease: Lease, user_id: int) -> Task:
    scenario = session.get(Scenario, lease.scenario_id)
    base = session.scalar(select(func.max(Judgment.revision)).where(
        Judgment.scenario_id == scenario.id, Judgment.user_id == user_id)) or 0
    is_gold = session.scalar(select(GoldAnswer.id).where(GoldAnswer.scenario_id == scenario.id)) is not None
    cands = [c.id for c in scenario.candidates]
    task = Task(scenario.id, user_id, scenario.round_id, base, shown_order(cands, user_id, scenario.id, base),
                aware(lease.leased_at), is_gold=is_gold and scenario.round.gold_rate > 0, leased=True)
    stored = lease.draft or {}
    # A held lease: the marks made before, if made on this very task (a tab still showing an earlier
    # revision of the scenario, submitted elsewhere since, may have written its own onto a new lease)
    own = stored if stored.get("task") == task.idempotency_key else None
    task.draft = Draft.from_state(task.shown_order, own)
    task.saved_state = task.draft.to_state()
    if own is not None and task.draft.to_state() == {k: own.get(k) for k in task.saved_state}:
        task.keys_applied = int(own.get("keys_applied") or 0)  # only for marks restored as they were stored
        task.active_seconds = float(own.get("active_seconds") or 0.0)
    return task


def save_draft(session: Session, task: Task, now: datetime | None = None, ttl: timedelta = LEASE_TTL) -> bool:
    """Store the task's draft on the annotator's live lease of its scenario, if the draft changed; whether
    it did. One UPDATE, no read: it never creates a lease, and leaves alone one that lapsed or is gone (the
    task was submitted or skipped). A mark shows the annotator is still there, so it renews the lease too."""
    if not task.draft_unsaved():
        return False
    now = now or utcnow()
    state = task.draft.to_state()
    stored = session.execute(
        update(Lease).where(Lease.scenario_id == task.scenario_id, Lease.user_id == task.user_id,
                            Lease.expires_at > now)
        .values(draft={**state, "task": task.idempotency_key, "keys_applied": task.keys_applied,
                       "active_seconds": round(task.active_seconds, 3)},
                expires_at=now + ttl)
        .execution_options(synchronize_session=False)).rowcount == 1
    if stored:
        # Counted as stored once committed: a commit that a database restart cut off leaves the draft unsaved,
        # so the write is made again (engine.retrying, or the next press).
        event.listen(session, "after_commit", lambda _session: setattr(task, "saved_state", state), once=True)
    return stored


def renew_lease(session: Session, user_id: int, scenario_id: int, now: datetime | None = None,
                ttl: timedelta = LEASE_TTL) -> None:
    """Keep the lease of a scenario the annotator is still looking at."""
    now = now or utcnow()
    lease = session.scalar(select(Lease).where(Lease.scenario_id == scenario_id, Lease.user_id == user_id))
    if lease is not None and aware(lease.expires_at) > now:
        lease.expires_at = now + ttl


def release(session: Session, user_id: int, scenario_id: int) -> None:
    """Drop the annotator's lease on a scenario (after a submit, a skip or a cancel)."""
    session.execute(delete(Lease).where(Lease.scenario_id == scenario_id, Lease.user_id == user_id))


@dataclass(frozen=True)
class Progress:
    """What the annotator sees of the queue: their own counts, never anyone's labels."""

    round_name: str
    judged_by_me: int
    left_for_me: int
    round_done: int  # judgments counting towards k, capped at k per scenario
    round_needed: int


def annotator_progress(session: Session, user_id: int, round_id: int, now: datetime | None = None) -> Progress:
    rnd = session.get(Round, round_id)
    queue = round_queue(session, rnd, user_id, now)
    regular = [sid for sid in queue.scenario_ids if queue.is_regular(sid)]
    return Progress(
        round_name=rnd.name,
        judged_by_me=sum(1 for skipped in queue.skipped_by_me.values() if not skipped),
        left_for_me=len(queue.candidates()),
        round_done=sum(min(queue.done[sid], queue.k) for sid in regular),
        round_needed=queue.k * len(regular))
