"""The Results page's tables and its Figure 5 chart, reshaped from studies/results.py's numbers.

No statistics here: every number comes from study_results; these only lay them out as rows.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from storyloop.studies.queue import CRITERIA, CRITERIA_TITLES

CRITERION_LABELS = {"cc": "CC", "sc": "SC", "sa": "SA"}  # the paper's abbreviations, Figure 5's x axis


def win_rate_table(results: dict) -> pd.DataFrame:
    """One row per pair of arms that met: the first arm's win rate over the second, its interval, counts."""
    rows = [{"pair": pair, "arm": r["arms"][0], "against": r["arms"][1], "win rate": r["win_rate"],
             "ci low": r["ci95"][0], "ci high": r["ci95"][1], "answers": r["n"], "wins": r["wins"],
             "losses": r["losses"], "ties": r["ties"], "both bad": r["both_bad"]}
            for pair, r in results["win_rate"].items()]
    return pd.DataFrame(rows, columns=["pair", "arm", "against", "win rate", "ci low", "ci high", "answers", "wins",
                                       "losses", "ties", "both bad"])


def bradley_terry_table(results: dict) -> pd.DataFrame:
    """Arms by Bradley–Terry score, best first."""
    rows = [{"arm": arm, "score": r["score"], "ci low": r["ci95"][0], "ci high": r["ci95"][1]}
            for arm, r in results["bt_scores"].items()]
    table = pd.DataFrame(rows, columns=["arm", "score", "ci low", "ci high"])
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def likert_table(results: dict) -> pd.DataFrame:
    """One row per arm and criterion: the mean score, its interval, the count and the distribution 1-5."""
    rows = []
    for arm, by_criterion in results["likert"].items():
        for crit, r in by_criterion.items():
            rows.append({"arm": arm, "criterion": CRITERION_LABELS.get(crit, crit),
                         "what": CRITERIA_TITLES.get(crit, crit), "mean": r["mean"], "ci low": r["ci95"][0],
                         "ci high": r["ci95"][1], "ratings": r["n"],
                         **{f"{s}": n for s, n in r["distribution"].items()}})
    return pd.DataFrame(rows, columns=["arm", "criterion", "what", "mean", "ci low", "ci high", "ratings",
                                       "1", "2", "3", "4", "5"])


def agreement_table(results: dict) -> pd.DataFrame:
    """Pairwise: alpha and exact agreement over items answered twice or more. Likert: alpha per criterion."""
    agree = results.get("agreement")
    if not agree:
        return pd.DataFrame(columns=["measure", "value"])
    if results["kind"] == "pairwise":
        rows = [("Krippendorff's alpha (preferred arm)", agree["krippendorff_alpha"]),
                ("exact agreement", agree["exact"]), ("items answered twice or more", agree["units"])]
    else:
        rows = [(f"Krippendorff's alpha, {CRITERIA_TITLES.get(c, c)}", agree[c]) for c in CRITERIA if c in agree]
    return pd.DataFrame(rows, columns=["measure", "value"])


def figure5(table: pd.DataFrame) -> alt.LayerChart:
    """The paper's Figure 5: criteria on the x axis, one bar per arm, error bars = the 95 % interval."""
    criteria = [CRITERION_LABELS[c] for c in CRITERIA]
    x = alt.X("criterion:N", sort=criteria, title=None, axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("arm:N", sort=list(dict.fromkeys(table["arm"])))
    bars = alt.Chart(table).mark_bar().encode(
        x, offset, alt.Y("mean:Q", scale=alt.Scale(domain=[0, 5]), title="mean score (1–5)"),
        alt.Color("arm:N", sort=list(dict.fromkeys(table["arm"]))),
        tooltip=["arm", "what", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("ci low:Q", format=".2f"),
                 alt.Tooltip("ci high:Q", format=".2f"), "ratings"])
    errors = alt.Chart(table).mark_errorbar(ticks=True).encode(
        x, offset, alt.Y("ci low:Q", title="mean score (1–5)"), alt.Y2("ci high:Q"))
    return alt.layer(bars, errors)
