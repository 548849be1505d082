"""Answering a study: the next item, leases, one answer per shown task, edits and undo as new revisions.

The same rules as judging (annotator/work_queue.py, db/judgments.py), on the study tables: the policy of who gets
what next is storyloop/queueing.py's (k answers per item, gold first and then at the study's gold rate, the
skip policy); an item is served only once every image it shows exists. A task holds the arms server-side:
the page gets images and prompts (StudyView), never an arm's name or id, and the store's file names are
sha256 of bare PNGs. Pairwise sides are drawn per (annotator, item, revision) and recorded with the answer.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storyloop.db.assets import asset_path
from storyloop.db.models import (Scenario, SkipPolicy, Study, StudyAnswer, StudyArm, StudyChoice, StudyGoldAnswer,
                                 StudyImage, StudyItem, StudyKind, StudyLease, User, utcnow)
from storyloop.queueing import LEASE_TTL, OpenItems, aware
from storyloop.studies.errors import StudyError

CRITERIA = ("cc", "sc", "sa")  # character consistency, style consistency, aesthetics (the paper's CC / SC / SA)
CRITERIA_TITLES = {"cc": "Character consistency", "sc": "Style consistency", "sa": "Aesthetics"}


@dataclass(frozen=True)
class LikertScores:
    cc: int
    sc: int
    sa: int


@dataclass
class StudyTask:
    """One item shown to one annotator. Everything the submit needs; the page shows only `view`."""

    study_id: int
    item_id: int
    user_id: int
    kind: StudyKind
    base_revision: int  # the annotator's latest revision of this item when shown (0: new)
    shown_at: datetime
    left_arm_id: int | None = field(default=None, repr=False)  # pairwise; never handed to the page
    right_arm_id: int | None = field(default=None, repr=False)
    is_gold: bool = False
    previous: StudyAnswer | None = field(default=None, repr=False)  # an edit: the answer it revises

    @property
    def idempotency_key(self) -> str:
        """Same for every tab and rerun showing this revision of this item to this annotator (see annotator Task)."""
        return f"s-{self.user_id}-{self.item_id}-{self.base_revision + 1}"

    @property
    def is_edit(self) -> bool:
        return self.base_revision > 0


def sides(user_id: int, item: StudyItem, revision: int) -> tuple[int, int]:
    """(left arm, right arm): a fair coin per annotator, item and revision, stable across reloads."""
    arms = (item.arm_a_id, item.arm_b_id)
    return arms[::-1] if random.Random(f"{user_id}:{item.id}:{revision}").random() < 0.5 else arms


# -- the queue -------------------------------------------------------------------------------------------

def study_queue(session: Session, study: Study, user_id: int, now: datetime | None = None) -> OpenItems:
    now = now or utcnow()
    items = list(session.scalars(select(StudyItem).where(StudyItem.study_id == study.id)
                                 .order_by(StudyItem.position)))
    ready = ready_items(session, study, items)
    gold_ids = set(session.scalars(select(StudyGoldAnswer.item_id).join(StudyItem)
                                   .where(StudyItem.study_id == study.id)))
    counts_skips = study.skip_policy == SkipPolicy.counts
    done: Counter = Counter()
    mine: dict[int, bool] = {}
    for item_id, uid, skipped in _latest(session, study.id):
        if not skipped or counts_skips:
            done[item_id] += 1
        if uid == user_id:
            mine[item_id] = skipped
    leased = Counter(session.scalars(
        select(StudyLease.item_id).join(StudyItem)
        .where(StudyItem.study_id == study.id, StudyLease.user_id != user_id, StudyLease.expires_at > now)))
    return OpenItems(user_id, [i.id for i in items if i.id in ready], gold_ids, done, leased, mine,
                     study.answers_per_item, study.gold_rate, study.skip_policy)


def ready_items(session: Session, study: Study, items: list[StudyItem]) -> set[int]:
    """Items whose every image exists (a model arm's images come from `study generate`)."""
    have = set(session.execute(select(StudyImage.arm_id, StudyImage.scenario_id, StudyImage.seed_index)
                               .join(StudyArm).where(StudyArm.study_id == study.id)).all())
    stories: dict[str, list[int]] = {}
    for sid, story in session.execute(select(Scenario.id, Scenario.story_id).where(Scenario.round_id == study.round_id)):
        stories.setdefault(story, []).append(sid)
    ready = set()
    for it in items:
        if it.scenario_id is not None:
            ok = {(it.arm_a_id, it.scenario_id, it.seed_index), (it.arm_b_id, it.scenario_id, it.seed_index)} <= have
        else:
            ok = all((it.arm_a_id, sid, it.seed_index) in have for sid in stories.get(it.story_id, []))
        if ok:
            ready.add(it.id)
    return ready


def _latest(session: Session, study_id: int, item_id: int | None = None):
    """(item, annotator, whether their latest revision is a skip) for the study's answers."""
    latest = (select(StudyAnswer.item_id, StudyAnswer.user_id, func.max(StudyAnswer.revision).label("rev"))
              .join(StudyItem, StudyItem.id == StudyAnswer.item_id).where(StudyItem.study_id == study_id))
    if item_id is not None:
        latest = latest.where(StudyAnswer.item_id == item_id)
    latest = latest.group_by(StudyAnswer.item_id, StudyAnswer.user_id).subquery()
    return [(i, u, reason is not None) for i, u, reason in session.execute(
        select(StudyAnswer.item_id, StudyAnswer.user_id, StudyAnswer.skip_reason)
        .join(latest, and_(StudyAnswer.item_id == latest.c.item_id, StudyAnswer.user_id == latest.c.user_id,
                           StudyAnswer.revision == latest.c.rev))).all()]


def next_study_task(session: Session, user_id: int, study_id: int, now: datetime | None = None,
                    ttl: timedelta = LEASE_TTL) -> StudyTask | None:
    """The item this annotator should answer now, leased to them for `ttl`; None when nothing is left."""
    now = now or utcnow()
    held = session.scalars(select(StudyLease).join(StudyItem)
                           .where(StudyLease.user_id == user_id, StudyLease.expires_at > now,
                                  StudyItem.study_id == study_id).order_by(StudyLease.leased_at)).first()
    if held is not None:
        return _task(session, held, user_id)
    study = session.get(Study, study_id)
    if study is None:
        raise StudyError(f"no study with id {study_id}")
    queue = study_queue(session, study, user_id, now)
    for item_id in queue.candidates():
        if queue.is_regular(item_id) and not _still_open(session, study, queue, item_id, now):
            continue  # taken meanwhile by someone else
        return _task(session, _take_lease(session, item_id, user_id, now, ttl), user_id)
    return None


def _still_open(session: Session, study: Study, queue: OpenItems, item_id: int, now: datetime) -> bool:
    # Lock the item row so two annotators racing for its last slot are served one at a time on PostgreSQL.
    session.execute(select(StudyItem.id).where(StudyItem.id == item_id).with_for_update())
    counts_skips = study.skip_policy == SkipPolicy.counts
    done = sum(1 for _, _, skipped in _latest(session, study.id, item_id) if not skipped or counts_skips)
    leased = session.scalar(select(func.count()).select_from(StudyLease).where(
        StudyLease.item_id == item_id, StudyLease.user_id != queue.user_id, StudyLease.expires_at > now))
    return done + leased < queue.k


def _take_lease(session: Session, item_id: int, user_id: int, now: datetime, ttl: timedelta) -> StudyLease:
    lease = session.scalar(select(StudyLease).where(StudyLease.item_id == item_id, StudyLease.user_id == user_id))
    if lease is None:
        try:
            with session.begin_nested():
                lease = StudyLease(item_id=item_id, user_id=user_id, leased_at=now, expires_at=now + ttl)
                session.add(lease)
            return lease
        except IntegrityError:  # the same annotator's other tab leased it a moment ago
            lease = session.scalar(select(StudyLease).where(StudyLease.item_id == item_id,
                                                            StudyLease.user_id == user_id))
    if aware(lease.expires_at) <= now:
        lease.leased_at = now  # an expired lease starts afresh
    lease.expires_at = now + ttl
    session.flush()
    return lease


def _last_revision(session: Session, item_id: int, user_id: int) -> int:
    return session.scalar(select(func.max(StudyAnswer.revision)).where(
        StudyAnswer.item_id == item_id, StudyAnswer.user_id == user_id)) or 0


def _task(session: Session, lease: StudyLease, user_id: int) -> StudyTask:
    item = session.get(StudyItem, lease.item_id)
    study = item.study
    base = _last_revision(session, item.id, user_id)
    left, right = sides(user_id, item, base + 1) if item.scenario_id is not None else (None, None)
    is_gold = study.gold_rate > 0 and session.scalar(
        select(StudyGoldAnswer.id).where(StudyGoldAnswer.item_id == item.id)) is not None
    return StudyTask(study.id, item.id, user_id, StudyKind(study.kind), base, aware(lease.leased_at), left, right,
                     is_gold=is_gold)


def renew_study_lease(session: Session, user_id: int, item_id: int, now: datetime | None = None,
                      ttl: timedelta = LEASE_TTL) -> None:
    """Keep the lease of an item the annotator is still looking at."""
    now = now or utcnow()
    lease = session.scalar(select(StudyLease).where(StudyLease.item_id == item_id, StudyLease.user_id == user_id))
    if lease is not None and aware(lease.expires_at) > now:
        lease.expires_at = now + ttl


def release_study_item(session: Session, user_id: int, item_id: int) -> None:
    """Drop the annotator's lease on an item (after a submit, a skip or a cancel)."""
    session.execute(delete(StudyLease).where(StudyLease.item_id == item_id, StudyLease.user_id == user_id))


# -- what the page shows ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    prompt: str
    references: list[Path]  # store paths (sha256 names)
    image: Path | None = None  # Likert: the arm's frame


@dataclass(frozen=True)
class StudyView:
    """What an annotator sees: prompts, references and images by store path. No arm, no arm id."""

    kind: StudyKind
    frames: list[Frame]  # pairwise: one (the scenario); Likert: the story's frames in order
    left: Path | None = None  # pairwise
    right: Path | None = None


def task_view(session: Session, store_dir: Path, task: StudyTask) -> StudyView:
    item = session.get(StudyItem, task.item_id)

    def image(arm_id: int, scenario_id: int) -> Path:
        im = session.scalar(select(StudyImage).where(StudyImage.arm_id == arm_id, StudyImage.scenario_id == scenario_id,
                                                     StudyImage.seed_index == item.seed_index))
        return asset_path(store_dir, im.asset)

    def refs(sc: Scenario) -> list[Path]:
        return [asset_path(store_dir, r.asset) for r in sc.references]

    if item.scenario_id is not None:
        sc = item.scenario
        return StudyView(StudyKind.pairwise, [Frame(sc.prompt, refs(sc))], image(task.left_arm_id, sc.id),
                         image(task.right_arm_id, sc.id))
    scenarios = session.scalars(select(Scenario).where(Scenario.round_id == item.study.round_id,
                                                       Scenario.story_id == item.story_id)
                                .order_by(Scenario.frame_index, Scenario.id))
    return StudyView(StudyKind.likert, [Frame(sc.prompt, refs(sc), image(item.arm_a_id, sc.id)) for sc in scenarios])


# -- submitting --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudySubmitted:
    answer_id: int
    item_id: int
    revision: int
    created: bool  # False: this task was already submitted (a double click, a rerun, another tab)


def submit_study_task(session: Session, task: StudyTask, choice: StudyChoice | str | None = None,
                      scores: LikertScores | None = None, skip_reason: str | None = None,
                      max_attempts: int = 5) -> StudySubmitted:
    """Store the annotator's answer (a choice, three scores, or a skip with its reason) as their next revision
    of the item, and release their lease. A resubmission of the same task stores nothing and returns the row."""
    _lock(session, task.item_id, task.user_id)
    if (done := _by_key(session, task.idempotency_key)) is not None:
        return StudySubmitted(done.id, done.item_id, done.revision, False)
    user = session.get(User, task.user_id, populate_existing=True)  # disabled a moment ago: nothing stored
    if user is None or not user.is_active:
        raise StudyError("this account is disabled: the answer was not stored")
    item = session.get(StudyItem, task.item_id)
    if item is None or item.study_id != task.study_id:
        raise StudyError(f"no item {task.item_id} in this study")
    values = _validate(item, task, choice, scores, skip_reason)
    for _ in range(max_attempts):
        row = StudyAnswer(item_id=item.id, user_id=task.user_id, revision=_last_revision(session, item.id, task.user_id) + 1,
                          idempotency_key=task.idempotency_key, shown_at=task.shown_at, submitted_at=utcnow(),
                          **values)
        try:
            with session.begin_nested():
                session.add(row)
            break
        except IntegrityError:
            # The same submit landed meanwhile (a no-op), or another tab took this revision number (retry).
            if (done := _by_key(session, task.idempotency_key)) is not None:
                return StudySubmitted(done.id, done.item_id, done.revision, False)
    else:
        raise StudyError("could not store the answer: too many concurrent edits of this item")
    release_study_item(session, task.user_id, item.id)
    return StudySubmitted(row.id, row.item_id, row.revision, True)


def _validate(item: StudyItem, task: StudyTask, choice, scores: LikertScores | None, skip_reason: str | None) -> dict:
    pairwise = item.scenario_id is not None
    out: dict = {}
    if pairwise:
        if {task.left_arm_id, task.right_arm_id} != {item.arm_a_id, item.arm_b_id}:
            raise StudyError("the two sides must show the item's two arms")
        out.update(left_arm_id=task.left_arm_id, right_arm_id=task.right_arm_id)
    if skip_reason is not None:
        if not skip_reason.strip():
            raise StudyError("a skip needs a reason")
        if choice is not None or scores is not None:
            raise StudyError("a skip carries no answer")
        return {**out, "skip_reason": skip_reason.strip()}
    if pairwise:
        if scores is not None or choice is None:
            raise StudyError("a pairwise item is answered left, right, tie or both bad")
        try:
            return {**out, "choice": StudyChoice(choice)}
        except ValueError:
            raise StudyError(f"unknown choice {choice!r}: left, right, tie or both_bad") from None
    if choice is not None or scores is None:
        raise StudyError("a Likert item is answered with three scores (cc, sc, sa)")
    for name in CRITERIA:
        value = getattr(scores, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
            raise StudyError(f"{CRITERIA_TITLES[name]} must be a whole number from 1 to 5, got {value!r}")
    return {name: getattr(scores, name) for name in CRITERIA}


def _lock(session: Session, item_id: int, user_id: int) -> None:
    """Serialise writers of one (item, annotator) until commit (SQLite already serialises all writers)."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"study-answer:{item_id}:{user_id}".encode()).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest[:8], "big", signed=True)})


def _by_key(session: Session, key: str) -> StudyAnswer | None:
    return session.scalar(select(StudyAnswer).where(StudyAnswer.idempotency_key == key))


# -- edits, undo, progress -------------------------------------------------------------------------------

def edit_study_task(session: Session, user_id: int, item_id: int, now: datetime | None = None) -> StudyTask:
    """A task that reopens the annotator's latest answer of the item (on the sides they saw it); its submit is
    the next revision, and the earlier ones stay. Raises LookupError if they have not answered it."""
    last = session.scalar(select(StudyAnswer).where(StudyAnswer.item_id == item_id, StudyAnswer.user_id == user_id)
                          .order_by(StudyAnswer.revision.desc()).limit(1))
    if last is None:
        raise LookupError(f"you have not answered item {item_id}")
    item = session.get(StudyItem, item_id)
    left, right = (last.left_arm_id, last.right_arm_id) if item.scenario_id is not None else (None, None)
    return StudyTask(item.study_id, item.id, user_id, StudyKind(item.study.kind), last.revision, now or utcnow(),
                     left, right, previous=last)


def undo_task(session: Session, user_id: int, study_id: int, now: datetime | None = None) -> StudyTask | None:
    """The edit task of the annotator's most recent answer in the study (the `U` key); None if there is none."""
    last = session.scalar(select(StudyAnswer).join(StudyItem)
                          .where(StudyAnswer.user_id == user_id, StudyItem.study_id == study_id)
                          .order_by(StudyAnswer.submitted_at.desc(), StudyAnswer.id.desc()).limit(1))
    return None if last is None else edit_study_task(session, user_id, last.item_id, now)


@dataclass(frozen=True)
class StudyProgress:
    """What an annotator sees of a study's queue: their own counts, never anyone's answers."""

    study_name: str
    answered_by_me: int
    left_for_me: int
    done: int  # answers counting towards k, capped at k per item
    needed: int


def study_progress(session: Session, user_id: int, study_id: int, now: datetime | None = None) -> StudyProgress:
    study = session.get(Study, study_id)
    queue = study_queue(session, study, user_id, now)
    regular = [i for i in queue.item_ids if queue.is_regular(i)]
    return StudyProgress(study.name, sum(1 for skipped in queue.skipped_by_me.values() if not skipped),
                         len(queue.candidates()), sum(min(queue.done[i], queue.k) for i in regular),
                         queue.k * len(regular))
