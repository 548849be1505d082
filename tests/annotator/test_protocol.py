"""The judging state machine: consistency, then anatomy among the consistent, then aesthetics."""

import pytest

from storyloop.annotator.protocol import Draft, Step
from storyloop.db.judgments import Label, validate, JudgmentIn
from storyloop.db.models import Outcome
from datetime import datetime, timezone


def valid(draft: Draft) -> tuple[Outcome, dict]:
    outcome, labels = draft.result()
    validate(JudgmentIn(1, 1, "k", outcome, draft.order, datetime.now(timezone.utc), labels), set(draft.order))
    return outcome, labels


def test_number_keys_walk_the_hierarchy_to_a_ranked_winner():
    d = Draft(order=[30, 10, 20, 40])
    d.toggle(1)          # 30 fails consistency
    d.advance()
    assert d.step is Step.anatomy and d.active() == [10, 20, 40]
    d.toggle(3)          # 20 fails anatomy
    d.toggle(1)          # 30 is not asked about anatomy: ignored
    d.advance()
    assert d.step is Step.aesthetics and d.survivors() == [10, 40]
    assert not d.ready()
    d.toggle(4)          # 40 best
    d.toggle(2)          # then 10
    assert d.ready()
    outcome, labels = valid(d)
    assert outcome is Outcome.ranked
    assert labels == {30: Label(False), 10: Label(True, True, 2), 20: Label(True, False), 40: Label(True, True, 1)}


def test_toggling_a_ranked_candidate_again_unranks_it():
    d = Draft(order=[1, 2])
    d.advance(), d.advance()
    d.toggle(2), d.toggle(1), d.toggle(2)
    assert d.ranking == [1]


def test_single_survivor_wins_without_being_asked():
    d = Draft(order=[1, 2, 3])
    d.toggle(1), d.toggle(2)
    d.advance(), d.advance()
    assert d.step is Step.aesthetics and d.ranking == [3] and d.ready()
    assert valid(d)[0] is Outcome.ranked


def test_no_consistent_candidate_means_all_bad():
    d = Draft(order=[1, 2])
    d.toggle(1), d.toggle(2)
    d.advance()
    assert d.step is Step.all_bad and d.ready()
    outcome, labels = valid(d)
    assert outcome is Outcome.all_bad and labels == {1: Label(False), 2: Label(False)}


def test_all_bad_key_fails_everything_in_the_current_step():
    d = Draft(order=[1, 2, 3])
    d.toggle(1)
    d.advance()
    d.mark_all_bad()
    outcome, labels = valid(d)
    assert outcome is Outcome.all_bad
    assert labels == {1: Label(False), 2: Label(True, False), 3: Label(True, False)}


def test_tie_clears_ranks_and_needs_two_survivors():
    d = Draft(order=[1, 2, 3])
    d.advance(), d.advance()
    d.toggle(2)
    d.toggle_tie()
    assert d.tie and d.ranking == []
    outcome, labels = valid(d)
    assert outcome is Outcome.tie and all(l.aesthetics_rank is None for l in labels.values())
    d.toggle(1)  # ranking again ends the tie
    assert not d.tie and d.ranking == [1]


def test_taking_a_tie_back_restores_the_ranking_it_set_aside():
    d = Draft(order=[1, 2, 3])
    d.advance(), d.advance()
    d.toggle(3), d.toggle(1)
    d.toggle_tie()
    assert d.tie and d.ranking == [] and d.status(1) == "tie"
    d.toggle_tie()
    assert not d.tie and d.ranking == [3, 1]
    assert valid(d)[1][3].aesthetics_rank == 1
    d.toggle_tie(), d.back()
    d.toggle(3)  # #3 fails anatomy while the ranking is set aside: it leaves that ranking too
    d.advance(), d.toggle_tie()
    assert d.ranking == [1] and not d.tie


def test_going_back_and_failing_a_ranked_candidate_drops_its_rank():
    d = Draft(order=[1, 2, 3])
    d.advance(), d.advance()
    d.toggle(1), d.toggle(2)
    d.back(), d.back()
    d.toggle(1)
    assert d.ranking == [2]
    d.advance(), d.advance()
    assert valid(d)[1][2].aesthetics_rank == 1


def test_incomplete_draft_refuses_to_produce_a_result():
    d = Draft(order=[1, 2])
    with pytest.raises(ValueError, match="not complete"):
        d.result()


def test_enter_advances_then_submits_and_says_when_nothing_is_ranked():
    d = Draft(order=[1, 2, 3])
    assert [d.enter(), d.enter()] == ["advanced", "advanced"] and d.step is Step.aesthetics
    assert d.enter() == "incomplete" and d.step is Step.aesthetics
    d.toggle(2)
    assert d.enter() == "submit"
