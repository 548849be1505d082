"""Time per judgment counts judging, not pauses: gaps between actions count up to IDLE_GAP, and a tab closed for a
break and reopened resumes the time it had without counting the break."""

import time
from datetime import timedelta

from sqlalchemy import select

from storyloop.annotator.work_queue import IDLE_GAP, next_task, save_draft
from storyloop.annotator.stats import judgment_times, judging_seconds
from storyloop.annotator.submit import submit_task
from storyloop.db import session_scope
from storyloop.db.models import Judgment, utcnow

LIMIT = IDLE_GAP.total_seconds()


def researcher_id(session) -> int:
    """The researcher every fixture round has: research reads take the acting user."""
    from sqlalchemy import select as _select

    from storyloop.db.models import User
    return session.scalar(_select(User.id).where(User.username == "rita"))


def test_gaps_between_actions_count_up_to_the_idle_limit(small_round):
    with session_scope(small_round.settings.db_url) as s:
        task = next_task(s, small_round.users["ann"])
    assert task.touch(100.0) == 0  # shown
    assert task.touch(112.5) == 12.5  # a press 12.5 s later
    assert task.touch(112.5 + 3600) == 12.5 + LIMIT  # an hour away: one idle gap's worth, not an hour
    assert task.touch(112.5 + 3600 + 4) == 16.5 + LIMIT


def test_a_reopened_tab_resumes_the_stored_time_and_the_judgment_records_it(small_round):
    url, ann = small_round.settings.db_url, small_round.users["ann"]
    with session_scope(url) as s:
        task = next_task(s, ann)
        task.touch(0.0)
        task.touch(20.0)
        task.draft.toggle(1)  # a mark: the draft (and the time so far) is stored on the lease
        assert save_draft(s, task)
    with session_scope(url) as s:  # the tab closed, a break, a new page session: the same task, restored
        again = next_task(s, ann)
    assert again.scenario_id == task.scenario_id and again.active_seconds == 20.0
    now = time.monotonic()
    again.touch(now - 7)  # its first run: a new gap starts, the break is not counted
    again.touch(now)  # a press 7 s later
    again.draft.enter(), again.draft.enter(), again.draft.toggle(2)
    with session_scope(url) as s:
        submit_task(s, again)
    with session_scope(url) as s:
        j = s.scalar(select(Judgment))
        assert 27.0 <= j.active_seconds < 27.0 + 1  # + the moment between the last touch and the submit
        times = judgment_times(s, small_round.round_id, actor=researcher_id(s))
    assert times.seconds.tolist() == [j.active_seconds]


def test_judgments_stored_before_it_was_measured_keep_shown_to_submitted():
    now = utcnow()
    assert judging_seconds(now, now + timedelta(seconds=64), None) == 64.0
    assert judging_seconds(now, now + timedelta(seconds=64), 9.5) == 9.5
