"""From judgments to winner and loser pools, by per-candidate majority at each level of the hierarchy.

Each annotator's latest revision counts once; skipped judgments count nowhere. For every candidate
the majority decides, level by level: character consistency, then anatomical integrity (among those
that passed), then aesthetics (a survivor "wins" when an annotator ranked it best, or tied it).
A scenario counts only with at least `min_votes` non-skipped judgments (default 2: one person's view
is a label to check, not a majority), or with `complete_only` the round's k. A label is accepted only
when its majority share reaches `min_agreement`; a candidate without an
accepted label is left out of both pools. Winners passed all three levels; each loser is tagged
with the level it failed at. A scenario whose majority outcome is not "ranked" (tie, all bad)
gives no pairs.

The aggregation is vectorised over a labels table (numpy bincount over candidates), so the same
code serves a round of a few hundred judgments and the 10^6-judgment benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storyloop.db.rounds import RoundError
from storyloop.db.models import GoldAnswer, Judgment, JudgmentLabel, Outcome, Round, Scenario, User

LEVELS = ("consistency", "anatomy", "aesthetics")  # loser level codes 0, 1, 2: later = harder negative
OUTCOME_CODES = {o.value: i for i, o in enumerate(Outcome)}


@dataclass(frozen=True)
class AggregationPolicy:
    min_agreement: float = 0.6  # share of annotators that must agree for a label to count (> 0.5)
    min_votes: int = 2  # scenarios with fewer non-skipped judgments give no pairs
    complete_only: bool = False  # only scenarios with the round's k non-skipped judgments
    include_gold: bool = False  # gold scenarios score annotators; they join the pools only if asked
    include_disabled: bool = False  # judgments of since-disabled annotators

    def __post_init__(self):
        if not 0.5 < self.min_agreement <= 1:
            raise ValueError("min_agreement must be in (0.5, 1]: a tie is never a majority")
        if self.min_votes < 1:
            raise ValueError("min_votes must be at least 1")


@dataclass
class Pools:
    """Winners and losers per scenario. `members`: scenario_id, candidate_id, is_winner, level, agreement."""

    members: pd.DataFrame
    policy: AggregationPolicy
    judgments: int  # judgments that were aggregated
    scenarios_judged: int
    scenarios_without_pairs: dict[str, int]  # reason -> count

    @property
    def winners(self) -> pd.DataFrame:
        return self.members[self.members.is_winner]

    @property
    def losers(self) -> pd.DataFrame:
        return self.members[~self.members.is_winner]

    def pair_counts(self) -> dict[str, int]:
        """Possible (winner, loser) pairs, per loser level."""
        w = self.winners.groupby("scenario_id").size()
        losers = self.losers
        out = {}
        for code, name in enumerate(LEVELS):
            per = losers[losers.level == code].groupby("scenario_id").size()
            out[name] = int((per * w.reindex(per.index, fill_value=0)).sum())
        return out


def labels_frame(session: Session, round_id: int, policy: AggregationPolicy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(judgments, labels) of the round: the latest revision per annotator and scenario, not skipped."""
    latest = (select(Judgment.scenario_id, Judgment.user_id, func.max(Judgment.revision).label("rev"))
              .join(Scenario, Scenario.id == Judgment.scenario_id).where(Scenario.round_id == round_id)
              .group_by(Judgment.scenario_id, Judgment.user_id).subquery())
    query = (select(Judgment.id.label("judgment_id"), Judgment.scenario_id, Judgment.user_id, Judgment.outcome)
             .join(latest, (Judgment.scenario_id == latest.c.scenario_id)
                   & (Judgment.user_id == latest.c.user_id) & (Judgment.revision == latest.c.rev))
             .join(User, User.id == Judgment.user_id)
             .where(Judgment.outcome != Outcome.skipped))
    if not policy.include_disabled:
        query = query.where(User.is_active.is_(True))
    if not policy.include_gold:
        query = query.where(~Judgment.scenario_id.in_(select(GoldAnswer.scenario_id)))
    judgments = pd.DataFrame(session.execute(query).all(),
                             columns=["judgment_id", "scenario_id", "user_id", "outcome"])
    judgments["outcome"] = judgments["outcome"].map(lambda o: OUTCOME_CODES[Outcome(o).value]).astype("int8")
    ids = judgments["judgment_id"].tolist()
    rows = []
    for chunk in range(0, len(ids), 5000):  # stay under bind-parameter limits
        rows += session.execute(
            select(JudgmentLabel.judgment_id, JudgmentLabel.candidate_id, JudgmentLabel.consistency_pass,
                   JudgmentLabel.anatomy_pass, JudgmentLabel.aesthetics_rank)
            .where(JudgmentLabel.judgment_id.in_(ids[chunk:chunk + 5000]))).all()
    labels = pd.DataFrame(rows, columns=["judgment_id", "candidate_id", "consistency", "anatomy", "rank"])
    labels = labels.merge(judgments[["judgment_id", "scenario_id", "outcome"]], on="judgment_id")
    return judgments, labels


def aggregate(judgments: pd.DataFrame, labels: pd.DataFrame, policy: AggregationPolicy) -> Pools:
    """Pools from a judgments table (scenario_id, outcome code) and a labels table.

    labels: scenario_id, candidate_id, outcome (code), consistency (bool), anatomy (bool or NA),
    rank (int or NA). Vectorised; no Python loop over rows.
    """
    thr = policy.min_agreement
    reasons = {"too few judgments": 0, "majority not ranked": 0, "no winner or no loser": 0}
    # Scenario level: enough judgments, and a majority that ranked.
    is_ranked = (judgments["outcome"] == OUTCOME_CODES["ranked"]).rename("ranked")
    per_scenario = is_ranked.groupby(judgments["scenario_id"]).agg(total="size", ranked="sum")
    enough = per_scenario.total >= policy.min_votes
    ranked = per_scenario.ranked / per_scenario.total >= thr
    reasons["too few judgments"] = int((~enough).sum())
    reasons["majority not ranked"] = int((enough & ~ranked).sum())
    usable = per_scenario.index[enough & ranked]

    lab = labels[labels.scenario_id.isin(usable)]
    cand, inverse = np.unique(lab.candidate_id.to_numpy(), return_inverse=True)
    n = len(cand)

    def votes(mask: np.ndarray, yes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = np.bincount(inverse, weights=mask.astype(np.float64), minlength=n)
        agree = np.bincount(inverse, weights=(mask & yes).astype(np.float64), minlength=n)
        return count, agree

    cons = lab.consistency.to_numpy(dtype=bool)
    anat_known = lab.anatomy.notna().to_numpy()
    anat = lab.anatomy.fillna(False).to_numpy(dtype=bool)
    survived = anat_known & anat
    rank = lab["rank"].to_numpy(dtype=np.float64, na_value=np.nan)
    tie = lab.outcome.to_numpy() == OUTCOME_CODES["tie"]
    win = survived & ((rank == 1) | tie)

    def decide(count, agree):
        share = np.divide(agree, count, out=np.zeros(len(count)), where=count > 0)
        return (count > 0) & (share >= thr), (count > 0) & (1 - share >= thr), share

    c_pass, c_fail, c_share = decide(*votes(np.ones_like(cons), cons))
    a_pass, a_fail, a_share = decide(*votes(anat_known, anat))
    w_pass, w_fail, w_share = decide(*votes(survived, win))

    level = np.full(n, -1, dtype=np.int8)
    level[c_fail] = 0
    level[c_pass & a_fail] = 1
    level[c_pass & a_pass & w_fail] = 2
    winner = c_pass & a_pass & w_pass
    keep = winner | (level >= 0)
    scenario_of = np.empty(n, dtype=np.int64)
    scenario_of[inverse] = lab.scenario_id.to_numpy()
    agreement = np.where(winner, np.minimum.reduce([c_share, a_share, w_share]),
                         np.choose(np.clip(level, 0, 2), [1 - c_share, 1 - a_share, 1 - w_share]))
    members = pd.DataFrame({"scenario_id": scenario_of[keep], "candidate_id": cand[keep],
                            "is_winner": winner[keep], "level": level[keep], "agreement": agreement[keep]})
    both = members.groupby("scenario_id").is_winner.agg(["any", "all"])
    complete = both.index[both["any"] & ~both["all"]]
    reasons["no winner or no loser"] = int(len(usable) - len(complete))
    members = members[members.scenario_id.isin(complete)].sort_values(["scenario_id", "candidate_id"])
    return Pools(members.reset_index(drop=True), policy, len(judgments), int(per_scenario.shape[0]), reasons)


def round_pools(session: Session, round_name: str, policy: AggregationPolicy | None = None) -> Pools:
    policy = policy or AggregationPolicy()
    rnd = session.scalar(select(Round).where(Round.name == round_name))
    if rnd is None:
        raise RoundError(f"no round named {round_name!r}")
    votes = max(policy.min_votes, rnd.judgments_per_scenario) if policy.complete_only else policy.min_votes
    return aggregate(*labels_frame(session, rnd.id, policy), replace(policy, min_votes=votes))


def split_scenarios(pools: Pools, share: float, seed: int) -> tuple[Pools, Pools]:
    """(training, held-out) pools: a seeded `share` of the scenarios with pairs (at least one, never
    all) is held out with all its candidates, so no held-out scenario ever reaches training."""
    scenarios = np.unique(pools.members.scenario_id.to_numpy())
    held_n = max(1, round(share * len(scenarios))) if share > 0 else 0
    if held_n and held_n >= len(scenarios):
        raise RoundError(f"eval_split {share} would hold out all {len(scenarios)} scenario(s) with pairs: "
                         "lower it or judge more scenarios")
    held = np.random.default_rng(seed).permutation(scenarios)[:held_n]
    mask = pools.members.scenario_id.isin(held).to_numpy()
    members = pools.members
    return (replace(pools, members=members[~mask].reset_index(drop=True)),
            replace(pools, members=members[mask].reset_index(drop=True)))


def every_pair(pools: Pools) -> list[tuple[int, int, int]]:
    """Every (scenario, winner, loser) pair of the pools, in a fixed order."""
    pairs = pools.winners[["scenario_id", "candidate_id"]].merge(
        pools.losers[["scenario_id", "candidate_id"]], on="scenario_id", suffixes=("_w", "_l"))
    pairs = pairs.sort_values(["scenario_id", "candidate_id_w", "candidate_id_l"])
    return [tuple(int(v) for v in row) for row in pairs.itertuples(index=False)]
