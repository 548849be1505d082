"""Combinatorial pair sampling: every epoch draws fresh (winner, loser) pairs from the pools.

Per scenario with W winners and L losers an epoch holds W x L pairs (the combinatorial size of its
pools), each drawn with a uniform winner and a loser chosen with probability proportional to the
weight of the level it failed at, so losers that failed late in the hierarchy (closest to the
winners: hard negatives) come up more often. An epoch is a pure function of (seed, epoch), shuffled;
the epochs form one stream of pairs, and process `rank` of `world` takes every world-th pair of it, so
accelerate processes see different pairs, together the ones a single process would, and a resumed run
sees exactly the pairs it would have seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from storyloop.dpo.pools import LEVELS, Pools

DEFAULT_LEVEL_WEIGHTS = (1.0, 2.0, 4.0)  # consistency, anatomy, aesthetics


@dataclass
class PairBatch:
    """Parallel arrays, one entry a pair."""

    scenario_id: np.ndarray
    winner_id: np.ndarray
    loser_id: np.ndarray
    loser_level: np.ndarray  # index into LEVELS

    def __len__(self) -> int:
        return len(self.scenario_id)

    def level_counts(self) -> dict[str, int]:
        counts = np.bincount(self.loser_level, minlength=len(LEVELS))
        return {name: int(c) for name, c in zip(LEVELS, counts)}


class PairSampler:
    def __init__(self, pools: Pools, seed: int = 0, level_weights: tuple[float, ...] = DEFAULT_LEVEL_WEIGHTS):
        if len(level_weights) != len(LEVELS) or min(level_weights) <= 0:
            raise ValueError(f"level_weights needs {len(LEVELS)} positive weights ({', '.join(LEVELS)})")
        self.seed, self.level_weights = seed, tuple(float(w) for w in level_weights)
        m = pools.members
        winners = m[m.is_winner].sort_values(["scenario_id", "candidate_id"])
        losers = m[~m.is_winner].sort_values(["scenario_id", "candidate_id"])
        self.scenarios = np.unique(winners.scenario_id.to_numpy())
        self.win_ids = winners.candidate_id.to_numpy()
        self.lose_ids = losers.candidate_id.to_numpy()
        self.lose_level = losers.level.to_numpy().astype(np.int64)
        self.w_start, self.w_count = _segments(winners.scenario_id.to_numpy(), self.scenarios)
        self.l_start, self.l_count = _segments(losers.scenario_id.to_numpy(), self.scenarios)
        weights = np.asarray(self.level_weights)[self.lose_level]
        self.cum_weight = np.cumsum(weights)
        self.seg_before = np.concatenate([[0.0], self.cum_weight])[self.l_start]
        self.seg_total = np.concatenate([[0.0], self.cum_weight])[self.l_start + self.l_count] - self.seg_before
        self.per_scenario = self.w_count * self.l_count

    @property
    def epoch_size(self) -> int:
        return int(self.per_scenario.sum())

    def fingerprint(self) -> str:
        """sha256 of everything that decides the pairs: pools, weights and seed."""
        payload = {"scenarios": self.scenarios.tolist(), "winners": self.win_ids.tolist(),
                   "losers": self.lose_ids.tolist(), "levels": self.lose_level.tolist(),
                   "weights": self.level_weights, "seed": self.seed}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def epoch(self, epoch: int, rank: int = 0, world: int = 1) -> PairBatch:
        if self.epoch_size == 0:
            return PairBatch(*(np.zeros(0, dtype=np.int64) for _ in range(4)))
        rng = np.random.default_rng([self.seed, epoch])
        seg = np.repeat(np.arange(len(self.scenarios)), self.per_scenario)
        w = self.w_start[seg] + (rng.random(len(seg)) * self.w_count[seg]).astype(np.int64)
        target = self.seg_before[seg] + rng.random(len(seg)) * self.seg_total[seg]
        loser = np.searchsorted(self.cum_weight, target, side="right")
        loser = np.minimum(loser, self.l_start[seg] + self.l_count[seg] - 1)  # float edge at segment end
        order = rng.permutation(len(seg))[rank::world]
        return PairBatch(self.scenarios[seg[order]], self.win_ids[w[order]], self.lose_ids[loser[order]],
                         self.lose_level[loser[order]])

    def pair_at(self, index: int, rank: int = 0, world: int = 1) -> tuple[int, int, int]:
        """The index-th pair process `rank` of `world` sees: pair `index * world + rank` of the one stream of
        epochs a single process walks through, so `world` processes drawing B pairs a step see exactly the
        pairs one process drawing world x B would (an epoch need not split evenly between processes).
        Returns (scenario, winner, loser)."""
        if self.epoch_size == 0:
            raise ValueError("the pools give no pairs")
        position = index * world + rank
        batch = self._cached_epoch(position // self.epoch_size)
        i = position % self.epoch_size
        return int(batch.scenario_id[i]), int(batch.winner_id[i]), int(batch.loser_id[i])

    def _cached_epoch(self, epoch: int) -> PairBatch:
        if getattr(self, "_epoch_key", None) != epoch:
            self._epoch_key, self._epoch_val = epoch, self.epoch(epoch)
        return self._epoch_val


def _segments(sorted_scenarios: np.ndarray, scenarios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = np.searchsorted(sorted_scenarios, scenarios, side="left")
    end = np.searchsorted(sorted_scenarios, scenarios, side="right")
    return start, end - start
