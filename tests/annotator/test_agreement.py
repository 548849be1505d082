"""Krippendorff's alpha and pairwise agreement against published figures."""

import pytest

from storyloop.annotator.agreement import krippendorff_alpha, pairwise_agreement

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing
# values left out. Published: nominal 0.743, ordinal 0.815.
KRIPPENDORFF_2011 = [[1, 1, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
                     [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [5, 5, 5], [1, 1], [3]]


def test_alpha_matches_krippendorffs_worked_example():
    assert krippendorff_alpha(KRIPPENDORFF_2011) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(KRIPPENDORFF_2011, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_perfect_agreement_is_one_and_unpaired_or_constant_data_is_undefined():
    assert krippendorff_alpha([[True, True], [False, False]]) == 1.0
    assert krippendorff_alpha([[True, True], [True, True]]) is None
    assert krippendorff_alpha([[True], [False]]) is None
    assert pairwise_agreement([[1]]) is None


def test_pairwise_agreement_pools_pairs_over_units():
    # unit 1: 3 pairs, 1 agreeing; unit 2: 1 pair, agreeing
    assert pairwise_agreement([["a", "a", "b"], ["x", "x"], ["lonely"]]) == pytest.approx(2 / 4)


def test_systematic_disagreement_gives_negative_alpha():
    assert krippendorff_alpha([[True, False]] * 10) < 0
