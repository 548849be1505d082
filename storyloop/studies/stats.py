"""A study's numbers from its answers: pure functions over pandas DataFrames, no database.

Pairwise answers (PAIRWISE_COLUMNS) give win rates per pair of arms, Bradley–Terry scores, a
position-bias check and agreement; Likert ratings (LIKERT_COLUMNS) give per-arm means and
distributions and agreement. Every interval is a 95 % percentile bootstrap over scenarios: the
scenario ids are resampled with replacement and all answers of a drawn scenario come along, because
answers on one scenario (its seeds, its annotators) are not independent of each other.

A tie and a "both_bad" both count as half a win each way (neither arm was preferred); "both_bad" is
also counted on its own. A skip is not an answer and must not reach these functions.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from storyloop.annotator import agreement

PAIRWISE_COLUMNS = ["item", "scenario", "annotator", "arm_left", "arm_right", "choice"]
LIKERT_COLUMNS = ["item", "scenario", "annotator", "arm", "criterion", "score"]
CHOICES = ("left", "right", "tie", "both_bad")
# The paper's Likert criteria: character consistency, style consistency, aesthetics (scores 1..5).
LIKERT_CRITERIA = ("cc", "sc", "sa")
LIKERT_SCORES = (1, 2, 3, 4, 5)

# Points the LEFT arm earns for each choice; the right arm earns 1 minus this.
_LEFT_POINTS = {"left": 1.0, "right": 0.0, "tie": 0.5, "both_bad": 0.5}
# Elo-like scale of Bradley–Terry scores: 400 points per factor of 10 in odds, centred on 1000.
ELO_SCALE = 400 / np.log(10)
ELO_MEAN = 1000.0
# L2 prior on the log-strengths (a Gaussian with variance 1/BT_PRIOR, so sd 10 log-units, ~1700 Elo
# points): too weak to move fitted scores noticeably, strong enough that an arm that won every answer
# stays finite (10 wins of 10 -> ~1100 points ahead instead of infinity).
BT_PRIOR = 0.01


# --- input checks --------------------------------------------------------------------------------

def _frame(data, columns: list[str], what: str) -> pd.DataFrame | None:
    """The rows as a DataFrame with `columns` checked; None for empty input (nothing to compute)."""
    if data is None:
        return None
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if df.empty:
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)} (expected {', '.join(columns)})")
    for c in columns:
        if df[c].isna().any():
            raise ValueError(f"{what}: column {c} has {int(df[c].isna().sum())} empty value(s)")
    return df[columns].reset_index(drop=True)


def _check_n_boot(n_boot: int) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1 (got {n_boot})")


def _arm_order(found: Sequence[Hashable], arms: Sequence[Hashable] | None) -> list:
    """`arms` as given (checked for repeats), else the arms in order of first appearance."""
    if arms is None:
        return list(dict.fromkeys(found))
    arms = list(arms)
    if len(set(arms)) != len(arms):
        raise ValueError(f"arms: {arms!r} names an arm twice")
    return arms


def _pairwise(answers, arms) -> tuple[pd.DataFrame | None, list]:
    """Checked answers with each row oriented by arm order: `a` (earlier arm), `b`, `pts_a` (a's points).

    With `arms` given, answers involving any other arm are left out."""
    df = _frame(answers, PAIRWISE_COLUMNS, "answers")
    if df is None:
        return None, []
    bad = sorted(set(df["choice"].astype(str)) - set(CHOICES))
    if bad:
        raise ValueError(f"choice: unknown value(s) {bad!r} (expected one of {', '.join(CHOICES)})")
    same = df["arm_left"] == df["arm_right"]
    if same.any():
        raise ValueError(f"arm_left/arm_right: item {df.loc[same, 'item'].iloc[0]!r} compares arm "
                         f"{df.loc[same, 'arm_left'].iloc[0]!r} with itself")
    # Row by row, left then right: the order a reader of the answers meets the arms in.
    order = _arm_order(df[["arm_left", "arm_right"]].to_numpy().ravel(), arms)
    rank = {a: i for i, a in enumerate(order)}
    li, ri = df["arm_left"].map(rank), df["arm_right"].map(rank)
    keep = li.notna() & ri.notna()
    df, li, ri = df[keep].reset_index(drop=True), li[keep].to_numpy(), ri[keep].to_numpy()
    if df.empty:
        return None, []
    left_first = li < ri
    left_pts = df["choice"].map(_LEFT_POINTS).to_numpy()
    df["a"] = np.where(left_first, df["arm_left"], df["arm_right"])
    df["b"] = np.where(left_first, df["arm_right"], df["arm_left"])
    df["ia"] = np.where(left_first, li, ri).astype(int)
    df["ib"] = np.where(left_first, ri, li).astype(int)
    df["pts_a"] = np.where(left_first, left_pts, 1.0 - left_pts)
    present = set(df["a"]) | set(df["b"])
    return df, [a for a in order if a in present]


def _likert(ratings, arms) -> tuple[pd.DataFrame | None, list, list]:
    """Checked ratings (score as int), the arms and the criteria in reporting order."""
    df = _frame(ratings, LIKERT_COLUMNS, "ratings")
    if df is None:
        return None, [], []
    score = pd.to_numeric(df["score"], errors="coerce")
    bad = ~score.isin(LIKERT_SCORES)
    if bad.any():
        raise ValueError(f"score: value(s) {sorted(set(map(str, df.loc[bad, 'score'])))[:5]} "
                         f"outside {LIKERT_SCORES[0]}..{LIKERT_SCORES[-1]}")
    df["score"] = score.astype(int)
    order = _arm_order(df["arm"], arms)
    df = df[df["arm"].isin(order)].reset_index(drop=True)
    if df.empty:
        return None, [], []
    present = set(df["arm"])
    seen = list(dict.fromkeys(df["criterion"]))
    criteria = [c for c in LIKERT_CRITERIA if c in seen] + [c for c in seen if c not in LIKERT_CRITERIA]
    return df, [a for a in order if a in present], criteria


# --- the bootstrap over scenarios ----------------------------------------------------------------

def _rng(seed: int, *key: Hashable) -> np.random.Generator:
    """A generator for one statistic: the same seed and key give the same draws, whatever else the
    call computes (adding an arm does not change another pair's interval)."""
    return np.random.default_rng([int(seed), zlib.crc32("\x1f".join(map(str, key)).encode())])


def _draws(rng: np.random.Generator, n_clusters: int, n_boot: int) -> np.ndarray:
    """(n_boot, n_clusters): how many times each cluster is drawn in each bootstrap sample."""
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)


def _ratio_interval(num: np.ndarray, den: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[float]:
    """2.5/97.5 percentiles of sum(num)/sum(den) over cluster resamples (every den > 0)."""
    counts = _draws(rng, len(num), n_boot)
    boot = (counts @ num) / (counts @ den)
    return [float(v) for v in np.percentile(boot, [2.5, 97.5])]


def _by_scenario(df: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray]:
    g = df.groupby("scenario", sort=False)[value]
    return g.sum().to_numpy(dtype=float), g.size().to_numpy(dtype=float)


# --- pairwise ------------------------------------------------------------------------------------

def win_rates(answers: pd.DataFrame, arms: list[str] | None = None, n_boot: int = 1000,
              seed: int = 0) -> dict[str, dict]:
    """For every pair of arms that met, "a vs b" (a earlier in `arms`, default order of first
    appearance): a's share of points over b (ties and both_bad half), its bootstrap interval, and the
    counts. `ties` counts "tie" answers only; `n` = wins + losses + ties + both_bad."""
    _check_n_boot(n_boot)
    df, order = _pairwise(answers, arms)
    out: dict[str, dict] = {}
    if df is None:
        return out
    # Grouped by arm ranks, so pairs come in arm order: the first arm's pairs first.
    for _, rows in df.groupby(["ia", "ib"], sort=True):
        a, b = rows["a"].iloc[0], rows["b"].iloc[0]
        key = f"{a} vs {b}"
        num, den = _by_scenario(rows, "pts_a")
        wins = int((rows["pts_a"] == 1.0).sum())
        losses = int((rows["pts_a"] == 0.0).sum())
        out[key] = {"arms": [a, b], "win_rate": float(num.sum() / den.sum()),
                    "ci95": _ratio_interval(num, den, n_boot, _rng(seed, "win_rate", a, b)),
                    "n": len(rows), "wins": wins, "losses": losses,
                    "ties": int((rows["choice"] == "tie").sum()),
                    "both_bad": int((rows["choice"] == "both_bad").sum())}
    return out


def _bt_fit(points: np.ndarray, games: np.ndarray, ia: np.ndarray, ib: np.ndarray, k: int,
            prior: float, x0: np.ndarray | None = None) -> np.ndarray:
    """Log-strengths maximising the Bradley–Terry likelihood with an L2 prior.

    Per pair p: a logistic loss with `points[p]` of `games[p]` going to arm ia[p] (a tie is half a
    win each way, as FastChat does). The prior makes the problem strictly convex, so the optimum is
    unique and finite even when an arm won everything or the comparison graph is disconnected."""
    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[ia] - theta[ib]
        value = (points * np.logaddexp(0.0, -d) + (games - points) * np.logaddexp(0.0, d)).sum()
        g = games * expit(d) - points  # d loss / d d
        grad = np.bincount(ia, g, k) - np.bincount(ib, g, k) + prior * theta
        return float(value + 0.5 * prior * (theta ** 2).sum()), grad

    start = np.zeros(k) if x0 is None else x0
    res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "maxiter": 1000})
    return res.x


def _elo(theta: np.ndarray) -> np.ndarray:
    return ELO_MEAN + ELO_SCALE * (theta - theta.mean(axis=-1, keepdims=True))


def bradley_terry(answers: pd.DataFrame, arms: list[str] | None = None, n_boot: int = 200, seed: int = 0,
                  *, prior: float = BT_PRIOR) -> dict[str, dict]:
    """Bradley–Terry score per arm on an Elo-like scale (mean 1000 over the arms; 400 points = odds of
    10 to 1), with a bootstrap interval over scenarios. Needs two arms or more, else {}."""
    _check_n_boot(n_boot)
    if prior <= 0:
        raise ValueError(f"prior must be positive (got {prior})")
    df, order = _pairwise(answers, arms)
    if df is None or len(order) < 2:
        return {}
    # Re-index the arms that are present 0..k-1 in reporting order.
    index = {a: i for i, a in enumerate(order)}
    ia_all = df["a"].map(index).to_numpy()
    ib_all = df["b"].map(index).to_numpy()
    pairs = sorted(set(zip(ia_all, ib_all)))
    pair_of = {p: j for j, p in enumerate(pairs)}
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    col = np.array([pair_of[p] for p in zip(ia_all, ib_all)])
    row_scen, scenarios = pd.factorize(df["scenario"])
    # Per scenario and pair: points to the earlier arm, and answers (a bootstrap draw is a sum of rows).
    points = np.zeros((len(scenarios), len(pairs)))
    games = np.zeros_like(points)
    np.add.at(points, (row_scen, col), df["pts_a"].to_numpy())
    np.add.at(games, (row_scen, col), 1.0)

    k = len(order)
    theta = _bt_fit(points.sum(0), games.sum(0), ia, ib, k, prior)
    counts = _draws(_rng(seed, "bradley_terry", *order), len(scenarios), n_boot)
    boot = np.array([_bt_fit(c @ points, c @ games, ia, ib, k, prior, x0=theta) for c in counts])
    lo, hi = np.percentile(_elo(boot), [2.5, 97.5], axis=0)
    score = _elo(theta)
    return {a: {"score": float(score[i]), "ci95": [float(lo[i]), float(hi[i])]} for i, a in enumerate(order)}


def position_bias(answers: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """How often the left frame won among decisive answers (left or right), with a bootstrap interval
    over scenarios; flagged when the interval leaves out one half. Without decisive answers:
    left_share and ci95 None, n 0, not flagged."""
    _check_n_boot(n_boot)
    df, _ = _pairwise(answers, None)
    empty = {"left_share": None, "ci95": None, "n": 0, "flagged": False}
    if df is None:
        return empty
    df = df[df["choice"].isin(["left", "right"])].copy()
    if df.empty:
        return empty
    df["left_won"] = (df["choice"] == "left").astype(float)
    num, den = _by_scenario(df, "left_won")
    lo, hi = _ratio_interval(num, den, n_boot, _rng(seed, "position_bias"))
    return {"left_share": float(num.sum() / den.sum()), "ci95": [lo, hi], "n": len(df),
            "flagged": bool(lo > 0.5 or hi < 0.5)}


def pairwise_agreement(answers: pd.DataFrame) -> dict:
    """Agreement between annotators on the arm they preferred ("tie" for tie and both_bad), so that
    two annotators who saw the sides swapped but chose the same arm agree. A unit is one item
    answered by two annotators or more; an annotator's last row for an item is their answer."""
    df, _ = _pairwise(answers, None)
    if df is None:
        return {"krippendorff_alpha": None, "exact": None, "units": 0}
    pair_per_item = df.groupby("item")[["a", "b"]].nunique()
    mixed = pair_per_item[(pair_per_item["a"] > 1) | (pair_per_item["b"] > 1)]
    if len(mixed):
        raise ValueError(f"item: {mixed.index[0]!r} is answered with different arm pairs")
    # "arm:" keeps an arm that happens to be called "tie" apart from a tie.
    winner = df["arm_left"].where(df["choice"] == "left", df["arm_right"])
    df["preferred"] = np.where(df["choice"].isin(["left", "right"]), "arm:" + winner.astype(str), "tie")
    last = df.drop_duplicates(["item", "annotator"], keep="last")
    units = [list(g) for _, g in last.groupby("item")["preferred"] if len(g) >= 2]
    return {"krippendorff_alpha": agreement.krippendorff_alpha(units, "nominal"),
            "exact": agreement.pairwise_agreement(units), "units": len(units)}


# --- Likert --------------------------------------------------------------------------------------

def likert_summary(ratings: pd.DataFrame, arms: list[str] | None = None, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per arm and criterion: the mean score with a bootstrap interval over scenarios, the number of
    ratings and the distribution {"1": count, ..., "5": count}. Arms in `arms` order (default first
    appearance); criteria cc, sc, sa first, then any others in order of appearance."""
    _check_n_boot(n_boot)
    df, order, criteria = _likert(ratings, arms)
    out: dict[str, dict[str, dict]] = {}
    if df is None:
        return out
    for arm in order:
        for crit in criteria:
            rows = df[(df["arm"] == arm) & (df["criterion"] == crit)]
            if rows.empty:
                continue
            num, den = _by_scenario(rows, "score")
            counts = rows["score"].value_counts()
            out.setdefault(arm, {})[crit] = {
                "mean": float(num.sum() / den.sum()),
                "ci95": _ratio_interval(num, den, n_boot, _rng(seed, "likert", arm, crit)),
                "n": len(rows),
                "distribution": {str(s): int(counts.get(s, 0)) for s in LIKERT_SCORES}}
    return out


def likert_agreement(ratings: pd.DataFrame) -> dict[str, float | None]:
    """Ordinal Krippendorff alpha per criterion; a unit is one item's arm rated by two annotators or
    more (an annotator's last row counts). None where alpha is undefined."""
    df, _, criteria = _likert(ratings, None)
    if df is None:
        return {}
    last = df.drop_duplicates(["item", "arm", "criterion", "annotator"], keep="last")
    out: dict[str, float | None] = {}
    for crit in criteria:
        rows = last[last["criterion"] == crit]
        units = [list(g) for _, g in rows.groupby(["item", "arm"])["score"]]
        out[crit] = agreement.krippendorff_alpha(units, "ordinal")
    return out
