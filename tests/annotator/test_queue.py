"""Next-task logic: leases, closest to done first, k judgments, skip policies, gold at its rate."""

from datetime import timedelta

from sqlalchemy import func, select

from storyloop.annotator.gold import set_gold
from storyloop.annotator.history import edit_task
from storyloop.annotator.protocol import Step
from storyloop.annotator.work_queue import Task, annotator_progress, next_task, save_draft, shown_order
from storyloop.annotator.submit import submit_task
from storyloop.db import session_scope
from storyloop.db.models import Lease, Outcome, SkipPolicy, utcnow
from tests.annotator.conftest import build_round


def researcher_id(session) -> int:
    """The researcher every fixture round has: research reads take the acting user."""
    from sqlalchemy import select as _select

    from storyloop.db.models import User
    return session.scalar(_select(User.id).where(User.username == "rita"))


def take(url, user, **kw):
    with session_scope(url) as s:
        return next_task(s, user, **kw)


def judge(url, task, best_position=1):
    """Submit `task`: every candidate passes, the one at `best_position` is best."""
    task.draft.advance(), task.draft.advance()
    task.draft.toggle(best_position)
    with session_scope(url) as s:
        return submit_task(s, task)


def skip(url, task, reason="cannot decide"):
    with session_scope(url) as s:
        return submit_task(s, task, skip_reason=reason)


def save(url, task, **kw):
    with session_scope(url) as s:
        return save_draft(s, task, **kw)


def lease_drafts(url):
    with session_scope(url) as s:
        return [(lease.user_id, lease.draft) for lease in s.scalars(select(Lease).order_by(Lease.id))]


def test_reload_resumes_the_leased_scenario_with_the_same_grid(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    first = take(url, ann)
    again = take(url, ann)
    assert first.scenario_id == again.scenario_id == small_round.scenarios[0]
    assert first.shown_order == again.shown_order and first.idempotency_key == again.idempotency_key
    assert sorted(first.shown_order) == sorted(small_round.candidates[first.scenario_id])


def test_shown_order_is_shuffled_per_annotator_and_stable():
    orders = {tuple(shown_order(list(range(8)), user, 5, 0)) for user in range(20)}
    assert len(orders) > 10
    assert shown_order([3, 1, 2], 7, 5, 0) == shown_order([1, 2, 3], 7, 5, 0)


def test_closest_to_done_comes_first_and_judged_scenarios_never_return(small_round):
    url, u = small_round.settings.db_url, small_round.users
    s0, s1, s2 = small_round.scenarios
    assert take(url, u["cat"]).scenario_id == s0
    assert take(url, u["bob"]).scenario_id == s0  # k = 2: s0 is now fully leased
    rita = take(url, u["rita"])
    assert rita.scenario_id == s1
    judge(url, rita)
    with session_scope(url) as s:  # cat and bob walk away without judging
        s.query(Lease).delete()
    ann = take(url, u["ann"])
    assert ann.scenario_id == s1  # one judgment already: closest to done, ahead of s0 in story order
    judge(url, ann)
    assert take(url, u["cat"]).scenario_id == s0  # s1 has its k = 2 judgments
    with session_scope(url) as s:
        s.query(Lease).delete()
    assert take(url, u["ann"]).scenario_id == s0  # never s1 again


def test_live_leases_count_towards_k_until_they_expire(small_round):
    url, u = small_round.settings.db_url, small_round.users
    s0, s1, _ = small_round.scenarios
    now = utcnow()
    assert take(url, u["ann"], now=now).scenario_id == s0
    assert take(url, u["bob"], now=now).scenario_id == s0  # k = 2: room for two
    assert take(url, u["cat"], now=now).scenario_id == s1  # s0 is fully leased
    later = now + timedelta(minutes=30)  # ann and bob walked away
    assert take(url, u["rita"], now=later).scenario_id == s0


def test_a_submit_on_a_lapsed_lease_is_kept_and_shows_as_over_k(settings, tmp_path):
    from storyloop.annotator.stats import progress_by_scenario

    rf = build_round(settings, tmp_path / "src", k=1, scenarios=1)
    url, u = settings.db_url, rf.users
    now = utcnow()
    slow = take(url, u["ann"], now=now)
    fast = take(url, u["bob"], now=now + timedelta(minutes=30))  # ann's lease lapsed: bob gets the scenario
    assert fast.scenario_id == slow.scenario_id
    judge(url, fast)
    assert judge(url, slow).created  # ann's work is kept
    with session_scope(url) as s:
        row = progress_by_scenario(s, rf.round_id, actor=researcher_id(s)).iloc[0]
    assert (row.judged, row.needed, row["over k"], bool(row.complete)) == (2, 1, 1, True)


def test_submit_releases_the_lease_and_is_idempotent(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    task = take(url, ann)
    first = judge(url, task)
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Lease)) == 0
        again = submit_task(s, task)  # a double click
    assert first.created and not again.created and again.judgment_id == first.judgment_id


def test_skip_policy_others_gives_the_scenario_to_someone_else_only(small_round):
    url, u = small_round.settings.db_url, small_round.users
    s0 = small_round.scenarios[0]
    skip(url, take(url, u["ann"]))
    assert take(url, u["ann"]).scenario_id != s0
    assert take(url, u["bob"]).scenario_id == s0


def test_skip_policy_everyone_last_brings_it_back_to_the_skipper_at_the_end(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=2, k=1, skip_policy=SkipPolicy.everyone_last)
    url, ann = settings.db_url, rf.users["ann"]
    s0, s1 = rf.scenarios
    skipped = take(url, ann)
    skip(url, skipped)
    assert take(url, ann).scenario_id == s1
    judge(url, take(url, ann))
    again = take(url, ann)
    assert again.scenario_id == s0 and again.base_revision == 1 and again.idempotency_key.endswith("-2")


def test_skip_policy_counts_makes_a_skip_one_of_the_k(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=2, k=1, skip_policy=SkipPolicy.counts)
    url, u = settings.db_url, rf.users
    skip(url, take(url, u["ann"]))
    assert take(url, u["bob"]).scenario_id == rf.scenarios[1]


def test_gold_comes_first_then_at_the_round_rate(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=6, k=3, gold_rate=0.25)
    url, ann = settings.db_url, rf.users["ann"]
    gold = rf.scenarios[4:]
    with session_scope(url) as s:
        for sid in gold:
            c = rf.candidates[sid]
            set_gold(s, sid, Outcome.ranked, [c[0]], [], actor=rf.users["rita"])
    seen = []
    while (t := take(url, ann)) is not None:
        seen.append(t.scenario_id)
        assert t.is_gold == (t.scenario_id in gold)
        judge(url, t)
    # gold first; the second gold once ann's gold share fell below 1/4: after 3 regular items
    assert seen[0] == gold[0] and seen[4] == gold[1] and sorted(seen) == sorted(rf.scenarios)


def test_gold_goes_to_every_annotator_whatever_k(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=2, k=1, gold_rate=0.5)
    url, u = settings.db_url, rf.users
    with session_scope(url) as s:
        set_gold(s, rf.scenarios[0], Outcome.all_bad, [], rf.candidates[rf.scenarios[0]], actor=rf.users["rita"])
    for name in ("ann", "bob", "cat"):
        t = take(url, u[name])
        assert t.scenario_id == rf.scenarios[0] and t.is_gold
        skip(url, t)


def test_progress_counts_only_what_the_annotator_may_know(small_round):
    url, u = small_round.settings.db_url, small_round.users
    judge(url, take(url, u["bob"]))
    judge(url, take(url, u["ann"]))
    with session_scope(url) as s:
        p = annotator_progress(s, u["ann"], small_round.round_id)
    assert (p.judged_by_me, p.left_for_me, p.round_done, p.round_needed) == (1, 2, 2, 6)


def test_empty_queue_gives_none(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=1, k=1)
    judge(settings.db_url, take(settings.db_url, rf.users["ann"]))
    assert take(settings.db_url, rf.users["bob"]) is None


def test_a_reload_resumes_the_leased_scenario_with_the_marks_saved_on_its_lease(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    task = take(url, ann)
    task.draft.toggle(2), task.draft.advance(), task.draft.toggle(1)  # #2 inconsistent, #1 bad anatomy
    assert save(url, task)
    again = take(url, ann)  # a reload or a second tab: a new session, nothing in memory
    assert again.idempotency_key == task.idempotency_key
    assert again.draft == task.draft and again.draft.step is Step.anatomy
    assert not save(url, again)  # nothing changed since it was read: no write
    again.draft.advance()
    assert save(url, again) and take(url, ann).draft.step is Step.aesthetics


def test_another_annotator_on_the_same_scenario_starts_blank(small_round):
    url, u = small_round.settings.db_url, small_round.users
    ann = take(url, u["ann"])
    ann.draft.toggle(1)
    save(url, ann)
    bob = take(url, u["bob"])  # k = 2: bob gets the same scenario, on his own lease
    assert bob.scenario_id == ann.scenario_id and bob.draft.step is Step.consistency
    assert all(bob.draft.consistency.values())
    assert [uid for uid, draft in lease_drafts(url) if draft is not None] == [u["ann"]]


def test_saving_a_draft_never_creates_or_revives_a_lease(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    now = utcnow()
    task = take(url, ann, now=now)
    task.draft.toggle(1)
    assert save(url, task, now=now)
    task.draft.toggle(2)
    assert not save(url, task, now=now + timedelta(minutes=30))  # the lease lapsed
    assert lease_drafts(url)[0][1]["consistency_fail"] == [task.draft.order[0]]  # as stored while it lived
    later = take(url, ann, now=now + timedelta(minutes=30))  # taken afresh: blank
    assert later.scenario_id == task.scenario_id and all(later.draft.consistency.values())
    judge(url, later)
    assert not save(url, task) and lease_drafts(url) == []  # submitted: no lease, and none made
    with session_scope(url) as s:
        edit = edit_task(s, ann, task.scenario_id)  # an edit holds no lease, so it keeps no draft
    edit.draft.back(), edit.draft.toggle(1)
    assert not save(url, edit) and lease_drafts(url) == []


def test_a_mark_keeps_the_lease_alive(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    now = utcnow()
    task = take(url, ann, now=now)
    task.draft.toggle(1)
    assert save(url, task, now=now + timedelta(minutes=15))
    resumed = take(url, ann, now=now + timedelta(minutes=30))  # 15 minutes after the mark, not 30 after the lease
    assert resumed.scenario_id == task.scenario_id and resumed.draft == task.draft


def test_a_skipped_scenario_comes_back_without_the_marks_made_before_the_skip(settings, tmp_path):
    rf = build_round(settings, tmp_path / "src", scenarios=2, k=1, skip_policy=SkipPolicy.everyone_last)
    url, ann = settings.db_url, rf.users["ann"]
    first = take(url, ann)
    first.draft.toggle(1), first.draft.toggle(2)
    save(url, first)
    skip(url, first)
    judge(url, take(url, ann))
    again = take(url, ann)
    assert again.scenario_id == first.scenario_id and again.base_revision == 1
    assert all(again.draft.consistency.values()) and again.draft.step is Step.consistency
    # a tab still showing the skipped task marks on: its draft is not the new task's, even on the same grid
    stale = Task(first.scenario_id, ann, first.round_id, 0, again.shown_order, first.shown_at, leased=True)
    stale.draft.toggle(3)
    assert save(url, stale)
    assert all(take(url, ann).draft.consistency.values())
