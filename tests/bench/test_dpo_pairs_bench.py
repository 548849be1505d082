"""The DPO and pairs benchmarks' parts run and agree (figures themselves are not asserted)."""

import math

from storyloop.bench.dpo import _measure
from storyloop.bench.pairs import run_pairs_bench, synthetic_judgments


def test_ours_and_naive_dpo_steps_both_start_at_log2():
    ours = _measure("tiny", "ours", 2, 1, "cpu", "float32")
    naive = _measure("tiny", "naive", 2, 1, "cpu", "float32")
    assert abs(ours["loss0"] - math.log(2)) < 1e-6 and abs(naive["loss0"] - math.log(2)) < 1e-6
    assert ours["step_s"] > 0 and naive["peak_mb"] > 0


def test_pairs_bench_on_a_small_synthetic_round():
    judgments, labels = synthetic_judgments(300)
    assert len(judgments) == 300 and len(labels) == 1200
    result = run_pairs_bench(3000)
    assert result["judgments"] == 3000 and result["pairs"] > 0
    assert sum(result["pairs_per_level"].values()) == result["pairs"]
