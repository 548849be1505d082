"""Researcher views: progress, timing, skip reasons, agreement, gold accuracy, a scenario's outcome."""

import csv
import io

import pandas as pd
from sqlalchemy import select
import pytest

from storyloop.annotator.gold import GoldError, gold_scores, set_gold
from storyloop.annotator.history import edit_task, my_history
from storyloop.annotator.work_queue import next_task
from storyloop.annotator.stats import (agreement, judgment_times, judgments_table, progress_by_annotator,
                                       progress_by_scenario, scenario_outcome, skip_reasons, to_safe_csv)
from storyloop.annotator.submit import submit_task
from storyloop.db import session_scope
from storyloop.db.models import Outcome, User


def researcher_id(session) -> int:
    """The researcher every fixture round has: research reads take the acting user."""
    return session.scalar(select(User.id).where(User.username == "rita"))


def judge_as(url, user, best_candidate=None, fail_candidates=(), skip=None):
    """Take the user's next task and judge it: given candidates fail consistency, one is best."""
    with session_scope(url) as s:
        task = next_task(s, user)
    d = task.draft
    for cid in fail_candidates:
        d.toggle(d.order.index(cid) + 1)
    d.advance(), d.advance()
    if best_candidate is not None:
        d.toggle(d.order.index(best_candidate) + 1)
    with session_scope(url) as s:
        submit_task(s, task, skip_reason=skip)
    return task


@pytest.fixture
def judged(small_round):
    """s0: ann and bob agree; s1: they disagree on the best and on one consistency; s2: cat skips."""
    url, u, c = small_round.settings.db_url, small_round.users, small_round.candidates
    s0, s1, s2 = small_round.scenarios
    with session_scope(url) as s:
        set_gold(s, s0, Outcome.ranked, [c[s0][0]], [c[s0][2]], actor=u["rita"])
    judge_as(url, u["ann"], best_candidate=c[s0][0], fail_candidates=[c[s0][2]])
    judge_as(url, u["bob"], best_candidate=c[s0][0], fail_candidates=[c[s0][2]])
    judge_as(url, u["ann"], best_candidate=c[s1][0], fail_candidates=[c[s1][2]])
    judge_as(url, u["bob"], best_candidate=c[s1][1])
    judge_as(url, u["cat"], skip="prompt is unclear")
    return small_round


def test_progress_per_scenario_and_per_annotator(judged):
    with session_scope(judged.settings.db_url) as s:
        ps = progress_by_scenario(s, judged.round_id, actor=researcher_id(s))
        pa = progress_by_annotator(s, judged.round_id, actor=researcher_id(s))
    assert list(ps.judged) == [2, 2, 0] and list(ps.skipped) == [0, 0, 1] and list(ps.gold) == [True, False, False]
    assert list(ps.complete) == [True, True, False]
    row = pa.set_index("annotator")
    assert row.loc["ann", "judged"] == 2 and row.loc["cat", "skipped"] == 1
    assert row.loc["ann", "gold accuracy"] == 1.0 and row.loc["cat", "gold judged"] == 0
    assert (row["median s"] >= 0).all()


def test_time_per_judgment_and_skip_reasons(judged):
    with session_scope(judged.settings.db_url) as s:
        times = judgment_times(s, judged.round_id, actor=researcher_id(s))
        reasons = skip_reasons(s, judged.round_id, actor=researcher_id(s))
    assert len(times) == 5 and (times.seconds >= 0).all()
    assert reasons.to_dict("records") == [{"reason": "prompt is unclear", "skips": 1}]


def test_agreement_per_criterion(judged):
    with session_scope(judged.settings.db_url) as s:
        table = agreement(s, judged.round_id, actor=researcher_id(s)).set_index("criterion")
    # consistency: 6 candidates x 2 annotators, one disagreement (s1's third candidate)
    assert table.loc["consistency", "units"] == 6
    assert table.loc["consistency", "pairwise agreement"] == pytest.approx(5 / 6)
    # best pick: s0 agreed, s1 not
    assert table.loc["best pick", "pairwise agreement"] == pytest.approx(0.5)
    assert pd.isna(table.loc["outcome", "alpha"])  # everyone said "ranked": no variation, alpha undefined


def test_gold_accuracy_scores_a_wrong_winner_as_wrong(small_round):
    url, u, c = small_round.settings.db_url, small_round.users, small_round.candidates
    s0 = small_round.scenarios[0]
    with session_scope(url) as s:
        set_gold(s, s0, Outcome.ranked, [c[s0][0]], [], actor=u["rita"])
    judge_as(url, u["ann"], best_candidate=c[s0][1])
    with session_scope(url) as s:
        pa = progress_by_annotator(s, small_round.round_id, actor=researcher_id(s)).set_index("annotator")
    assert pa.loc["ann", "gold accuracy"] == 0.0


def test_gold_answers_are_checked(small_round):
    url, c = small_round.settings.db_url, small_round.candidates
    s0, s1 = small_round.scenarios[:2]
    with session_scope(url) as s:
        with pytest.raises(GoldError, match="exactly one winner"):
            set_gold(s, s0, Outcome.ranked, [], [], actor=small_round.users["rita"])
        with pytest.raises(GoldError, match="candidates of this scenario"):
            set_gold(s, s0, Outcome.ranked, [c[s1][0]], [], actor=small_round.users["rita"])
        with pytest.raises(GoldError, match="no winners"):
            set_gold(s, s0, Outcome.all_bad, [c[s0][0]], [], actor=small_round.users["rita"])


def test_scenario_outcome_aggregates_by_majority(judged):
    s0, s1 = judged.scenarios[:2]
    c = judged.candidates
    with session_scope(judged.settings.db_url) as s:
        agg = scenario_outcome(s, s0, actor=researcher_id(s))
        split = scenario_outcome(s, s1, actor=researcher_id(s))
    assert agg.outcome == "ranked" and agg.judgments == 2
    verdicts = {t.candidate_id: t.verdict for t in agg.candidates}
    assert verdicts == {c[s0][0]: "winner", c[s0][1]: "survived", c[s0][2]: "loser"}
    # s1: ann failed the third candidate, bob did not; each picked another best
    assert {t.candidate_id: t.verdict for t in split.candidates} == {
        c[s1][0]: "survived", c[s1][1]: "survived", c[s1][2]: "split"}


def test_history_shows_only_ones_own_judgments_and_edits_are_new_revisions(judged):
    url, u, c = judged.settings.db_url, judged.users, judged.candidates
    s0 = judged.scenarios[0]
    with session_scope(url) as s:
        mine = my_history(s, u["ann"])
    assert [h.scenario_key for h in mine] == ["s1", "s0"] and all(h.revision == 1 for h in mine)
    with session_scope(url) as s:
        task = edit_task(s, u["ann"], s0)
    assert task.draft.ready() and task.draft.ranking == [c[s0][0]] and task.base_revision == 1
    task.draft.toggle(task.draft.order.index(c[s0][1]) + 1)  # add a second-best
    with session_scope(url) as s:
        done = submit_task(s, task)
    assert done.created and done.revision == 2
    with session_scope(url) as s:
        mine = my_history(s, u["ann"])
        assert mine[0].scenario_key == "s0" and mine[0].revision == 2
        assert len(progress_by_scenario(s, judged.round_id, actor=researcher_id(s))) == 3
        assert progress_by_scenario(s, judged.round_id, actor=researcher_id(s)).judged.tolist() == [2, 2, 0]  # an edit adds no judgment


def test_export_csv_keeps_integers_and_neutralises_formulas(small_round):
    url, u, c = small_round.settings.db_url, small_round.users, small_round.candidates
    s0 = small_round.scenarios[0]
    judge_as(url, u["ann"], best_candidate=c[s0][0])
    judge_as(url, u["bob"], skip='=HYPERLINK("http://evil.example","click")')
    with session_scope(url) as s:
        table = judgments_table(s, small_round.round_id, actor=researcher_id(s))
    rows = list(csv.DictReader(io.StringIO(to_safe_csv(table).decode())))
    skip = next(r for r in rows if r["outcome"] == "skipped")
    assert skip["skip_reason"] == """'=HYPERLINK("http://evil.example","click")"""
    assert skip["candidate_index"] == "" and skip["revision"] == "1"
    ranked = [r for r in rows if r["outcome"] != "skipped"]
    assert ranked and all(r["candidate_index"].isdigit() and r["frame"].isdigit() for r in ranked)
    assert {r["consistency_pass"] for r in ranked} <= {"True", "False"}


def test_research_writes_refuse_an_annotator_whatever_page_calls_them(small_round):
    from storyloop.annotator.gold import clear_gold
    from storyloop.annotator.rounds import update_round
    from storyloop.annotator.stats import export_judgments_csv
    from storyloop.db.models import AuditEvent, GoldAnswer, Round, SkipPolicy
    from storyloop.db.users import Forbidden

    url, u, c = small_round.settings.db_url, small_round.users, small_round.candidates
    s0 = small_round.scenarios[0]
    with session_scope(url) as s:
        set_gold(s, s0, Outcome.ranked, [c[s0][0]], [], actor=u["rita"])
    writes = {
        "set gold answers": lambda s: set_gold(s, s0, Outcome.all_bad, [], [], actor=u["ann"]),
        "clear gold answers": lambda s: clear_gold(s, s0, actor=u["ann"]),
        "change a round's settings": lambda s: update_round(s, small_round.round_id, 1, 0.5, SkipPolicy.counts,
                                                            actor=u["ann"]),
        "export judgments": lambda s: export_judgments_csv(s, small_round.round_id, actor=u["ann"]),
    }
    for what, write in writes.items():
        with pytest.raises(Forbidden, match=f"'ann' \\(annotator\\) may not {what}"), session_scope(url) as s:
            write(s)
    with session_scope(url) as s:
        assert s.scalar(select(GoldAnswer.outcome)) == Outcome.ranked
        assert s.get(Round, small_round.round_id).judgments_per_scenario == 2
        assert "export" not in s.scalars(select(AuditEvent.action)).all()
        assert export_judgments_csv(s, small_round.round_id, actor=u["rita"]).startswith(b"round,scenario,")
        clear_gold(s, s0, actor=u["rita"])


def test_every_reader_of_other_peoples_labels_refuses_an_annotator(judged, small_round):
    """Whatever page (or script) calls them: the role is checked in the reader itself."""
    from storyloop.annotator.gold import get_gold
    from storyloop.db.users import Forbidden

    rid, sid, ann = small_round.round_id, small_round.scenarios[0], small_round.users["ann"]
    readers = [(progress_by_scenario, rid), (progress_by_annotator, rid), (judgment_times, rid), (skip_reasons, rid),
               (agreement, rid), (judgments_table, rid), (scenario_outcome, sid), (gold_scores, rid), (get_gold, sid)]
    with session_scope(small_round.settings.db_url) as s:
        for read, arg in readers:
            with pytest.raises(Forbidden, match="'ann' \\(annotator\\) may not read"):
                read(s, arg, actor=ann)
            read(s, arg, actor=researcher_id(s))  # a researcher may
        with pytest.raises(TypeError):
            judgment_times(s, rid)  # no acting user: not even called
