"""Queued judging keys, applied without a browser: a burst loses nothing, and no press lands twice or on
another task."""

from datetime import datetime, timezone

from storyloop.annotator.keys import NOTHING_RANKED, apply
from storyloop.annotator.protocol import Step
from storyloop.annotator.work_queue import Task
from storyloop.db.models import Outcome


def task(scenario: int = 7, revision: int = 0) -> Task:
    return Task(scenario_id=scenario, user_id=1, round_id=1, base_revision=revision, shown_order=[11, 12, 13],
                shown_at=datetime.now(timezone.utc))


def presses(t: Task, *keys: str, start: int = 1) -> list[dict]:
    """Key presses as the component logs them, on `t`; "+2" is Shift+2."""
    return [{"seq": start + i, "key": k.lstrip("+"), "shift": k.startswith("+"), "task": t.idempotency_key}
            for i, k in enumerate(keys)]


def test_a_burst_applied_at_once_labels_what_was_typed():
    t = task()
    done = apply(t, presses(t, "1", "Enter", "Enter", "2", "Enter"), 0)
    assert (done.seen, done.leave, done.reason) == (5, "submit", None)
    outcome, labels = t.draft.result()
    assert outcome is Outcome.ranked
    assert labels[11].consistency_pass is False
    assert (labels[12].anatomy_pass, labels[12].aesthetics_rank) == (True, 1)
    assert (labels[13].anatomy_pass, labels[13].aesthetics_rank) == (True, None)


def test_presses_are_applied_in_seq_order_and_never_twice():
    t = task()
    events = presses(t, "1", "Enter", "2")
    done = apply(t, list(reversed(events)), 0)
    assert (t.draft.step, t.draft.consistency[11], t.draft.anatomy[12], done.seen) == (Step.anatomy, False, False, 3)
    # the next log still holds those three: only the new press is applied
    done = apply(t, events + presses(t, "3", start=4), done.seen)
    assert (t.draft.consistency[11], t.draft.anatomy[12], t.draft.anatomy[13], done.seen) == (False, False, False, 4)
    assert apply(t, events, 4).seen == 4 and t.draft.anatomy[12] is False  # a replayed log changes nothing


def test_presses_for_another_task_are_dropped():
    old, new = task(scenario=7), task(scenario=8)
    done = apply(new, presses(old, "1", "a") + presses(new, "2", start=3), 0)
    assert done.seen == 3 and done.leave is None
    assert [new.draft.consistency[c] for c in new.shown_order] == [True, False, True]
    assert new.draft.step is Step.consistency  # the old task's "a" did not mark all bad


def test_presses_after_a_submit_are_dropped():
    t = task()
    done = apply(t, presses(t, "a", "Enter", "Backspace", "1"), 0)
    assert (done.leave, done.seen) == ("submit", 4)
    assert t.draft.step is Step.all_bad  # not stepped back: those keys were meant for the next scenario


def test_s_then_a_number_picks_a_skip_reason():
    t = task()
    done = apply(t, presses(t, "s", "2"), 0)
    assert (done.leave, done.reason) == ("submit", "references are unclear")
    assert all(t.draft.consistency.values())  # the 2 picked a reason, it did not toggle candidate #2


def test_skip_panel_keys_enter_with_a_typed_reason_and_esc():
    t = task()
    events = presses(t, "s", "Enter", "a", "Escape", "1")
    events[1]["text"] = "  "  # Enter in an empty reason box does nothing
    done = apply(t, events, 0)
    assert done.leave is None and not t.skipping
    assert t.draft.consistency[11] is False and t.draft.step is Step.consistency  # after Esc, 1 toggles again
    typed = presses(t, "s", "Enter", start=6)
    typed[1]["text"] = " two people in the reference "
    done = apply(t, typed, done.seen)
    assert (done.leave, done.reason) == ("submit", "two people in the reference")


def test_zoom_reopen_and_cancel_edit():
    t = task()
    done = apply(t, presses(t, "+3", "u"), 0)
    assert (done.zoom, done.leave) == (3, "reopen")
    assert all(t.draft.consistency.values())  # Shift+3 zooms; it does not toggle #3
    edit = task(revision=1)
    assert apply(edit, presses(edit, "u", "Escape"), 0).leave == "cancel_edit"  # no U while editing


def test_enter_with_nothing_ranked_warns_instead_of_doing_nothing():
    t = task()
    done = apply(t, presses(t, "Enter", "Enter", "Enter"), 0)
    assert t.draft.step is Step.aesthetics and done.leave is None and done.warning == NOTHING_RANKED
    done = apply(t, presses(t, "2", "Enter", start=4), done.seen)  # a later press clears the warning
    assert (done.leave, done.warning) == ("submit", None)
