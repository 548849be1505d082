"""The study keys: one key per pairwise answer; Likert ratings in turn, Tab between criteria, Enter to submit."""

import pytest

from storyloop.db.models import StudyChoice
from storyloop.studies.protocol import LikertDraft, pairwise_choice
from storyloop.studies.queue import LikertScores


def test_pairwise_keys_each_give_one_answer():
    assert [pairwise_choice(k) for k in ("1", "ArrowLeft", "2", "ArrowRight", "t", "b")] == [
        StudyChoice.left, StudyChoice.left, StudyChoice.right, StudyChoice.right, StudyChoice.tie,
        StudyChoice.both_bad]
    assert pairwise_choice("3") is None and pairwise_choice("Enter") is None


def test_likert_rates_in_turn_and_submits_only_when_complete():
    d = LikertDraft()
    assert d.press("4") == "" and d.press("Enter") == "incomplete"
    d.press("2")
    assert d.press("Enter") == "incomplete" and d.current == 2
    d.press("5")
    assert d.press("Enter") == "submit" and d.result() == LikertScores(cc=4, sc=2, sa=5)


def test_likert_tab_moves_without_rating_and_backspace_clears():
    d = LikertDraft()
    d.press("Tab"), d.press("Tab")
    d.press("3")  # aesthetics first
    d.press("Tab", shift=True), d.press("Tab", shift=True)  # back to character consistency
    d.press("1"), d.press("1")
    assert d.scores == {"cc": 1, "sc": 1, "sa": 3}
    d.press("Backspace")  # the current criterion is the last one rated's successor: aesthetics
    assert d.scores["sa"] is None and not d.complete
    with pytest.raises(ValueError, match="Rate all three"):
        d.result()
