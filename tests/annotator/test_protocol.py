"""The judging state machine: consistency, then anatomy among the consistent, then aesthetics."""

import json

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


def _drafts_at_every_step() -> dict[str, Draft]:
    """One draft with marks at each step, the tie with a ranking set aside, and all bad."""
    consistency = Draft(order=[30, 10, 20, 40])
    consistency.toggle(1)
    anatomy = Draft(order=[30, 10, 20, 40])
    anatomy.toggle(1), anatomy.advance(), anatomy.toggle(3)
    ranked = Draft(order=[30, 10, 20, 40])
    ranked.toggle(1), ranked.advance(), ranked.advance(), ranked.toggle(4), ranked.toggle(2)
    tie = Draft(order=[30, 10, 20, 40])
    tie.advance(), tie.advance(), tie.toggle(3), tie.toggle_tie()
    all_bad = Draft(order=[30, 10, 20, 40])
    all_bad.toggle(2), all_bad.advance(), all_bad.mark_all_bad()
    return {"consistency": consistency, "anatomy": anatomy, "ranked": ranked, "tie": tie, "all_bad": all_bad}


@pytest.mark.parametrize("name", ["consistency", "anatomy", "ranked", "tie", "all_bad"])
def test_a_draft_comes_back_from_its_json_state_at_every_step(name):
    d = _drafts_at_every_step()[name]
    back = Draft.from_state(d.order, json.loads(json.dumps(d.to_state())))
    assert back == d
    assert [back.status(c) for c in back.order] == [d.status(c) for c in d.order]


def test_a_restored_tie_still_gives_back_the_ranking_it_set_aside():
    d = _drafts_at_every_step()["tie"]
    back = Draft.from_state(d.order, json.loads(json.dumps(d.to_state())))
    back.toggle_tie()
    assert not back.tie and back.ranking == [20]


def test_a_stored_state_that_no_longer_fits_gives_a_fresh_draft():
    order = [30, 10, 20, 40]
    fresh = Draft(order=list(order))
    state = _drafts_at_every_step()["ranked"].to_state()
    stale = [
        None, {}, [], "anatomy",
        {**state, "order": [30, 10, 20]},                 # a candidate was added since
        {**state, "order": [10, 30, 20, 40]},             # another grid
        {**state, "step": "beauty"},                      # a step this code does not know
        {**state, "consistency_fail": [99]},              # a candidate not in the grid
        {**state, "ranking": [40, 99]},
        {**state, "ranking": [40, 40]},
        {**state, "tie": "yes"},
        {**state, "ranking": 7},
        {k: v for k, v in state.items() if k != "untied"},
        {**state, "consistency_fail": order},             # at aesthetics with nobody left
        {**state, "step": "all_bad"},                     # all bad with survivors
    ]
    for s in stale:
        assert Draft.from_state(order, s) == fresh, s
