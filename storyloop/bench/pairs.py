"""`storyloop bench pairs`: 10^6 synthetic judgments -> aggregated pools -> one epoch of pairs.

Synthetic annotators judge candidates with a hidden true level (winner, or failing at one of the
three levels) and flip each label with some noise; the timed part is exactly what a DPO run does
on real data: `aggregate` over the judgments and labels tables, then `PairSampler.epoch`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from storyloop.dpo.pools import OUTCOME_CODES, AggregationPolicy, aggregate
from storyloop.dpo.sampler import PairSampler


def synthetic_judgments(judgments: int, annotators_per_scenario: int = 3, candidates: int = 4,
                        noise: float = 0.1, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    scenarios = judgments // annotators_per_scenario
    # Hidden truth per candidate: 0/1/2 = fails at consistency/anatomy/aesthetics, 3 = winner.
    truth = rng.choice(4, size=(scenarios, candidates), p=[0.3, 0.15, 0.25, 0.3])
    n = scenarios * annotators_per_scenario
    j_scenario = np.repeat(np.arange(scenarios), annotators_per_scenario)
    seen = truth[j_scenario] + np.where(rng.random((n, candidates)) < noise, rng.choice([-1, 1], (n, candidates)), 0)
    seen = np.clip(seen, 0, 3)
    consistency = seen >= 1
    anatomy = np.where(consistency, seen >= 2, np.nan)
    survivors = seen >= 2
    # Rank 1 for the best-looking survivor (ties broken by position), higher ranks for the others.
    score = np.where(survivors, seen * 10 - np.arange(candidates), -1)
    order = np.argsort(-score, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, candidates + 1)[None].repeat(n, 0), axis=1)
    rank = np.where(survivors, rank, np.nan)
    outcome = np.where(survivors.any(axis=1), OUTCOME_CODES["ranked"], OUTCOME_CODES["all_bad"]).astype("int8")
    judgments_df = pd.DataFrame({"judgment_id": np.arange(n), "scenario_id": j_scenario, "outcome": outcome})
    labels = pd.DataFrame({
        "judgment_id": np.repeat(np.arange(n), candidates),
        "scenario_id": np.repeat(j_scenario, candidates),
        "candidate_id": (j_scenario[:, None] * candidates + np.arange(candidates)).ravel(),
        "consistency": consistency.ravel(),
        "anatomy": pd.array(anatomy.ravel(), dtype="boolean"),
        "rank": pd.array(rank.ravel(), dtype="Int64"),
        "outcome": np.repeat(outcome, candidates)})
    return judgments_df, labels


def run_pairs_bench(judgments: int = 1_000_000, seed: int = 0) -> dict:
    judgments_df, labels = synthetic_judgments(judgments, seed=seed)
    start = time.perf_counter()
    pools = aggregate(judgments_df, labels, AggregationPolicy())
    aggregated = time.perf_counter()
    epoch = PairSampler(pools, seed=seed).epoch(0)
    done = time.perf_counter()
    return {"judgments": int(len(judgments_df)), "labels": int(len(labels)),
            "scenarios_with_pairs": int(pools.members.scenario_id.nunique()), "pairs": int(len(epoch)),
            "pairs_per_level": epoch.level_counts(), "aggregate_s": round(aggregated - start, 4),
            "epoch_s": round(done - aggregated, 4), "seconds": round(done - start, 4),
            "target_met": done - start <= 2.0}
