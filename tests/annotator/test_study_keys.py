"""The study pages' keys without a browser: each press once, only on the item on screen, by the protocol's rules."""

from datetime import datetime, timezone

from storyloop.annotator.study_keys import LIKERT_PAGE_KEYS, PAIRWISE_PAGE_KEYS, StudyScreen, apply_presses
from storyloop.db.models import StudyChoice, StudyKind
from storyloop.studies.protocol import LIKERT_INCOMPLETE
from storyloop.studies.queue import LikertScores, StudyTask


def screen(kind=StudyKind.pairwise, revision: int = 0) -> StudyScreen:
    task = StudyTask(1, 9, 1, kind, revision, datetime.now(timezone.utc), *((3, 4) if kind is StudyKind.pairwise
                                                                          else (None, None)))
    return StudyScreen.of(task)


def presses(sc: StudyScreen, *keys: str, start: int = 1) -> list[dict]:
    return [{"seq": start + i, "key": k.lstrip("+"), "shift": k.startswith("+"), "task": sc.key}
            for i, k in enumerate(keys)]


def test_one_key_answers_a_pairwise_item_and_the_rest_of_the_burst_is_dropped():
    sc = screen()
    done = apply_presses(sc, presses(sc, "ArrowRight", "t", "s"), 0)
    assert (done.leave, done.choice, done.seen, sc.skipping) == ("submit", StudyChoice.right, 3, False)
    assert apply_presses(sc, presses(sc, "1"), 3).leave is None  # a replayed log changes nothing


def test_presses_for_another_screen_and_shifted_digits_do_nothing():
    sc, old = screen(), screen()
    assert sc.key != old.key  # a new screen of the same item is another screen
    done = apply_presses(sc, presses(old, "1") + presses(sc, "+2", start=2), 0)
    assert (done.leave, done.seen) == (None, 2)


def test_skip_reason_escape_and_undo():
    sc = screen()
    done = apply_presses(sc, presses(sc, "s", "Escape", "s", "4"), 0)
    assert (done.leave, done.reason, done.choice) == ("submit", "cannot decide", None)
    assert apply_presses(sc, presses(sc, "u", start=10), 0).leave == "reopen"
    edit = screen(revision=1)
    assert apply_presses(edit, presses(edit, "u", "Escape"), 0).leave == "cancel_edit"


def test_likert_keys_follow_the_protocol():
    sc = screen(StudyKind.likert)
    done = apply_presses(sc, presses(sc, "3", "Enter"), 0)
    assert (done.leave, done.warning) == (None, LIKERT_INCOMPLETE)
    done = apply_presses(sc, presses(sc, "+Tab", "Backspace", "2", "5", "Enter", start=3), done.seen)
    # Shift+Tab from SC back to CC, cleared, then 2 and 5: CC 2, SC 5, SA still open
    assert done.leave is None and sc.likert.scores == {"cc": 2, "sc": 5, "sa": None}
    done = apply_presses(sc, presses(sc, "1", "Enter", start=8), done.seen)
    assert (done.leave, done.scores) == ("submit", LikertScores(2, 5, 1))


def test_tab_is_taken_on_the_likert_page_only():
    assert "Tab" in LIKERT_PAGE_KEYS and "Tab" not in PAIRWISE_PAGE_KEYS
    assert {"ArrowLeft", "ArrowRight", "t", "b"} <= set(PAIRWISE_PAGE_KEYS)
