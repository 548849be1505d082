import numpy as np
import pytest
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import GoldAnswer, Outcome
from storyloop.db.users import set_active
from storyloop.dpo.pools import AggregationPolicy, round_pools
from storyloop.dpo.sampler import PairSampler
from tests.dpo.helpers import A, C, P, judge, judged_round


def pools(settings, **policy):
    with session_scope(settings.db_url) as s:
        return round_pools(s, "r1", AggregationPolicy(**policy))


def members(p):
    return {int(r.candidate_id): ("W" if r.is_winner else ["consistency", "anatomy", "aesthetics"][r.level])
            for r in p.members.itertuples()}


def test_majority_at_each_level_gives_winners_and_tagged_losers(settings, tmp_path):
    (sid,), (cands,), users = judged_round(settings, tmp_path)
    a, b, c, d = cands
    judge(settings, sid, cands, users["ann"], [P, A, C, P], ranks={0: 1, 3: 2})
    judge(settings, sid, cands, users["bob"], [P, A, C, P], ranks={0: 1, 3: 2})
    judge(settings, sid, cands, users["cat"], [P, P, C, A], ranks={0: 1, 1: 2})  # outvoted on b and d
    p = pools(settings)
    assert members(p) == {a: "W", b: "anatomy", c: "consistency", d: "aesthetics"}
    assert p.pair_counts() == {"consistency": 1, "anatomy": 1, "aesthetics": 1}


def test_a_split_vote_leaves_the_candidate_out(settings, tmp_path):
    (sid,), (cands,), users = judged_round(settings, tmp_path, annotators=("ann", "bob"))
    a, b, c, d = cands
    judge(settings, sid, cands, users["ann"], [P, C, C, C], ranks={0: 1})
    judge(settings, sid, cands, users["bob"], [P, P, C, C], ranks={0: 1, 1: 2})  # b: 1 pass vs 1 fail
    assert members(pools(settings)) == {a: "W", c: "consistency", d: "consistency"}
    with pytest.raises(ValueError, match="min_agreement"):
        AggregationPolicy(min_agreement=0.5)


def test_tie_and_all_bad_majorities_give_no_pairs(settings, tmp_path):
    sids, cands, users = judged_round(settings, tmp_path, scenarios=2)
    for u in users.values():
        judge(settings, sids[0], cands[0], u, [P, P, C, C], outcome=Outcome.tie)
        judge(settings, sids[1], cands[1], u, [C, C, A, C])
    p = pools(settings)
    assert p.members.empty
    assert p.scenarios_without_pairs["majority not ranked"] == 2


def test_only_the_latest_revision_counts_and_skips_count_nowhere(settings, tmp_path):
    (sid,), (cands,), users = judged_round(settings, tmp_path, annotators=("ann",))
    a, b, c, d = cands
    judge(settings, sid, cands, users["ann"], [P, C, C, C], ranks={0: 1})
    judge(settings, sid, cands, users["ann"], [C, P, C, C], ranks={1: 1})  # an edit
    assert members(pools(settings, min_votes=1)) == {a: "consistency", b: "W", c: "consistency", d: "consistency"}


def test_one_vote_is_not_a_majority_and_complete_only_wants_k(settings, tmp_path):
    sids, cands, users = judged_round(settings, tmp_path, scenarios=2)  # k = 3
    judge(settings, sids[0], cands[0], users["ann"], [P, C, C, C], ranks={0: 1})
    for u in ("ann", "bob"):
        judge(settings, sids[1], cands[1], users[u], [P, C, C, C], ranks={0: 1})
    default = pools(settings)
    assert set(default.members.scenario_id) == {sids[1]}
    assert default.scenarios_without_pairs["too few judgments"] == 1
    assert set(pools(settings, min_votes=1).members.scenario_id) == set(sids)
    assert pools(settings, complete_only=True).members.empty  # two of three judgments: not complete
    judge(settings, sids[1], cands[1], users["cat"], [P, C, C, C], ranks={0: 1})
    assert set(pools(settings, complete_only=True).members.scenario_id) == {sids[1]}
    with pytest.raises(ValueError, match="min_votes"):
        AggregationPolicy(min_votes=0)


def test_disabled_annotators_and_gold_scenarios_are_explicit(settings, tmp_path):
    sids, cands, users = judged_round(settings, tmp_path, scenarios=2, annotators=("ann", "bob"))
    for s, cs in zip(sids, cands):
        judge(settings, s, cs, users["ann"], [P, C, C, C], ranks={0: 1})
        judge(settings, s, cs, users["bob"], [C, P, C, C], ranks={1: 1})
    with session_scope(settings.db_url) as s:
        set_active(s, "bob-r1", False)
        s.add(GoldAnswer(scenario_id=sids[1], outcome=Outcome.ranked, winner_candidate_ids=[cands[1][0]]))
    p = pools(settings, min_votes=1)
    assert set(p.members.scenario_id) == {sids[0]}  # gold left out; bob's votes left out
    assert members(p)[cands[0][0]] == "W"
    both = pools(settings, include_disabled=True, include_gold=True, min_agreement=1.0)
    assert set(both.members.scenario_id) == set()  # ann and bob disagree on a and b everywhere
    assert pools(settings, include_gold=True, min_votes=1).members.scenario_id.nunique() == 2
    assert pools(settings).members.empty  # with bob disabled, ann's is the only vote left


def test_sampler_is_deterministic_weighted_and_sharded(settings, tmp_path):
    (sid,), (cands,), users = judged_round(settings, tmp_path, candidates=4, annotators=("ann",))
    a, b, c, d = cands
    judge(settings, sid, cands, users["ann"], [P, A, C, P], ranks={0: 1, 3: 2})
    sampler = PairSampler(pools(settings, min_votes=1), seed=3)
    assert sampler.epoch_size == 3
    e0 = sampler.epoch(0)
    assert np.array_equal(e0.loser_id, PairSampler(pools(settings, min_votes=1), seed=3).epoch(0).loser_id)
    assert set(e0.winner_id) == {a}
    # Over many epochs losers come up in proportion to their level weight 1 : 2 : 4.
    drawn = np.concatenate([sampler.epoch(e).loser_id for e in range(3000)])
    share = {x: float(np.mean(drawn == x)) for x in (c, b, d)}
    assert share[c] == pytest.approx(1 / 7, abs=0.02) and share[d] == pytest.approx(4 / 7, abs=0.02)
    # Two processes split an epoch without overlap.
    big = PairSampler(pools(settings, min_votes=1), seed=3)
    r0, r1 = big.epoch(5, 0, 2), big.epoch(5, 1, 2)
    full = big.epoch(5)
    assert len(r0) + len(r1) == len(full)
    assert sorted(np.concatenate([r0.loser_id, r1.loser_id]).tolist()) == sorted(full.loser_id.tolist())


def test_processes_together_walk_the_stream_of_one_process_even_when_an_epoch_splits_unevenly(settings, tmp_path):
    (sid,), (cands,), users = judged_round(settings, tmp_path, candidates=4, annotators=("ann",))
    judge(settings, sid, cands, users["ann"], [P, A, C, P], ranks={0: 1, 3: 2})
    sampler = PairSampler(pools(settings, min_votes=1), seed=3)
    assert sampler.epoch_size == 3  # odd: two processes cannot split an epoch evenly
    alone = [sampler.pair_at(i) for i in range(12)]
    assert alone[:3] == [(int(s), int(w), int(l)) for s, w, l in zip(*(getattr(sampler.epoch(0), f)
                                                                   for f in ("scenario_id", "winner_id", "loser_id")))]
    two = [sampler.pair_at(i, rank, 2) for i in range(6) for rank in (0, 1)]
    assert two == alone  # on main, process 1 started its second epoch a pair early and the two drifted apart
