"""Agreement: Krippendorff's alpha and pairwise exact agreement per criterion; gold accuracy."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.gold import gold_scores
from storyloop.annotator.stats import agreement

st.header("Agreement")
round_id = ui.pick_round()
me = ui.user().id  # the reads below check this account may read the round's labels
if round_id is None:
    st.stop()
with ui.db() as s:
    table = agreement(s, round_id, actor=me)
    gold = gold_scores(s, round_id, actor=me)

st.caption("Over each annotator's latest judgment; skips give no labels. Alpha is nominal Krippendorff's alpha "
           "(1 = perfect, 0 = chance); it is empty where nobody disagreed or fewer than two annotators overlap.")
st.dataframe(table, hide_index=True, column_config={
    "alpha": st.column_config.NumberColumn(format="%.3f"),
    "pairwise agreement": st.column_config.NumberColumn(format="percent"),
    "what": st.column_config.TextColumn(width="large")})
plot = table.melt(id_vars="criterion", value_vars=["alpha", "pairwise agreement"], var_name="measure").dropna()
if len(plot):
    st.altair_chart(alt.Chart(plot).mark_bar().encode(
        alt.X("value:Q", scale=alt.Scale(domain=[min(-0.2, plot.value.min()), 1])), alt.Y("criterion:N", title=None),
        alt.YOffset("measure:N"), alt.Color("measure:N")), width="stretch")

st.subheader("Accuracy on gold items")
if not gold:
    st.caption("No gold answers in this round, or nobody judged them yet. Set gold answers on the Gallery page "
               "and a gold rate on the Rounds page.")
else:
    frame = pd.DataFrame([{"annotator": g.username, "gold judged": g.gold_judged, "correct": g.correct,
                           "accuracy": g.accuracy} for g in gold])
    st.dataframe(frame, hide_index=True, column_config={"accuracy": st.column_config.NumberColumn(format="percent")})
    st.altair_chart(alt.Chart(frame).mark_bar().encode(
        alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        alt.Y("annotator:N", title=None)), width="stretch")
