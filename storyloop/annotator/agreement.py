"""Inter-annotator agreement: Krippendorff's alpha and pairwise exact agreement.

A unit is one thing several annotators labelled (a candidate's consistency, a scenario's best pick);
its values are the labels, one per annotator who gave one. Units with fewer than two values cannot
be paired and are left out, as Krippendorff prescribes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np


def _pairable(units: Iterable[Sequence[Hashable]]) -> list[Sequence[Hashable]]:
    return [u for u in units if len(u) >= 2]


def krippendorff_alpha(units: Iterable[Sequence[Hashable]], level: str = "nominal") -> float | None:
    """Alpha over `units` (each a list of the values annotators gave it). None when undefined:
    fewer than two pairable values, or no variation at all (expected disagreement 0)."""
    if level not in ("nominal", "ordinal"):
        raise ValueError("level must be 'nominal' or 'ordinal'")
    units = _pairable(units)
    values = sorted({v for u in units for v in u}, key=lambda v: (str(type(v)), v))
    if not units or len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    # Coincidence matrix: every ordered pair of values within a unit, weighted 1 / (m_u - 1).
    o = np.zeros((len(values), len(values)))
    for u in units:
        counts = np.bincount([index[v] for v in u], minlength=len(values)).astype(float)
        o += (np.outer(counts, counts) - np.diag(counts)) / (len(u) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - np.eye(len(values))
    else:  # ordinal: squared distance in cumulative frequency between the two ranks
        cum = np.cumsum(n_c)
        lo, hi = np.minimum.outer(np.arange(len(values)), np.arange(len(values))), \
            np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        delta = (cum[hi] - np.where(lo > 0, cum[lo - 1], 0) - (n_c[lo] + n_c[hi]) / 2) ** 2
    d_observed = (o * delta).sum() / n
    d_expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    if d_expected == 0:
        return None
    return float(1.0 - d_observed / d_expected)


def pairwise_agreement(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Share of annotator pairs (over all units) who gave the same value; None without pairs."""
    agree = pairs = 0
    for u in _pairable(units):
        _, counts = np.unique(np.array([str(v) for v in u]), return_counts=True)
        agree += int((counts * (counts - 1) // 2).sum())
        pairs += len(u) * (len(u) - 1) // 2
    return agree / pairs if pairs else None
