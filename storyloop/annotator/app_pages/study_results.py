"""Study results (researchers): win rates, Bradley–Terry, position bias, Likert means, Figure 5, downloads.

Every number is storyloop.studies.results.study_results'; annotator/study_tables.py lays them out.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.study_tables import (agreement_table, bradley_terry_table, figure5, likert_table,
                                              win_rate_table)
from storyloop.studies.export import answers_table, encode_answers
from storyloop.studies.gold import study_gold_scores
from storyloop.studies.overview import study_overviews
from storyloop.studies.results import study_results

INTERVAL = {"ci low": st.column_config.NumberColumn(format="%.3f"),
            "ci high": st.column_config.NumberColumn(format="%.3f")}

st.header("Study results")
with ui.db() as s:
    overviews = study_overviews(s)
if not overviews:
    st.info("No studies yet: create one with `storyloop study create`.")
    st.stop()
names = [o.study.name for o in reversed(overviews)]  # newest first
current = st.session_state.get(ui.RESULTS_STUDY)
name = st.selectbox("Study", names, index=names.index(current) if current in names else 0, key="results-picker",
                    width=420)
st.session_state[ui.RESULTS_STUDY] = name
overview = next(o for o in overviews if o.study.name == name)
with ui.db() as s:
    results = study_results(s, name)
    gold = study_gold_scores(s, overview.study.id)
    answers = answers_table(s, name)

st.markdown(f"**{results['kind']}** study on round **{overview.round_name}** · {results['items']} items · "
            f"k = {overview.study.answers_per_item} · **{results['answers']}** answers counted "
            f"(each annotator's latest revision), {results['skipped']} skips left out.")
st.dataframe(pd.DataFrame([{"arm": a.name, "kind": a.kind.value, "spec": a.spec, "images": a.images,
                            "images needed": a.images_needed} for a in overview.arms]), hide_index=True)

if not results["answers"]:
    st.info("No answers yet.")
elif results["kind"] == "pairwise":
    st.subheader("Win rates")
    st.caption("Per pair of arms: the first arm's share of points against the second (a tie or both bad is half a "
               "point each), with its 95 % bootstrap interval over scenarios.")
    st.dataframe(win_rate_table(results), hide_index=True, key="win-rates", column_config={
        "win rate": st.column_config.NumberColumn(format="percent"),
        "ci low": st.column_config.NumberColumn(format="percent"),
        "ci high": st.column_config.NumberColumn(format="percent")})
    if len(results["arms"]) >= 3:
        st.subheader("Bradley–Terry scores")
        st.caption("One score per arm on an Elo-like scale (mean 1000; 400 points = odds of 10 to 1), 95 % interval.")
        st.dataframe(bradley_terry_table(results), hide_index=True, key="bradley-terry", column_config={
            "score": st.column_config.NumberColumn(format="%.0f"),
            "ci low": st.column_config.NumberColumn(format="%.0f"),
            "ci high": st.column_config.NumberColumn(format="%.0f")})
    bias = results["position_bias"]
    st.subheader("Position bias")
    if bias and bias["left_share"] is not None:
        lo, hi = bias["ci95"]
        text = (f"The left frame won {bias['left_share']:.0%} of {bias['n']} decisive answers "
                f"(95 % interval {lo:.0%}–{hi:.0%}).")
        if bias["flagged"]:
            st.warning(text + " The interval leaves out 50 %: annotators lean to one side.", icon=":material/flag:")
        else:
            st.success(text + " The interval holds 50 %: no side is favoured.")
    else:
        st.caption("No decisive (left or right) answers yet.")
else:
    st.subheader("Likert scores")
    table = likert_table(results)
    st.caption("Per arm and criterion: the mean score (1–5) with its 95 % bootstrap interval over stories, and how "
               "many ratings gave each score. CC character consistency, SC style consistency, SA aesthetics.")
    st.dataframe(table, hide_index=True, key="likert", column_config={
        "mean": st.column_config.NumberColumn(format="%.2f"), **{
            c: st.column_config.NumberColumn(format="%.2f") for c in ("ci low", "ci high")}})
    st.altair_chart(figure5(table), width="stretch")

if results["answers"]:
    st.subheader("Agreement")
    st.dataframe(agreement_table(results), hide_index=True, key="agreement")
if gold:
    st.subheader("Accuracy on gold items")
    st.dataframe(pd.DataFrame([{"annotator": g.username, "gold answered": g.answered, "matched": g.matched,
                                "accuracy": g.accuracy} for g in gold]), hide_index=True,
                 column_config={"accuracy": st.column_config.NumberColumn(format="percent")})

st.subheader("Every answer, arms revealed")
st.caption(f"{len(answers)} rows: every revision of every answer, skips included (`latest` marks the counted ones).")
with st.container(horizontal=True, gap="small"):
    st.download_button("Download answers (CSV)", encode_answers(answers, ".csv"), file_name=f"{name}-answers.csv",
                       mime="text/csv", icon=":material/download:", type="primary", disabled=answers.empty)
    st.download_button("Download answers (parquet)", encode_answers(answers, ".parquet"),
                       file_name=f"{name}-answers.parquet", mime="application/octet-stream",
                       icon=":material/download:", disabled=answers.empty)
