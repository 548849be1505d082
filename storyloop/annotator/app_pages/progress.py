"""Progress: judged / needed per scenario and per annotator, time per judgment, skip reasons."""

from __future__ import annotations

import altair as alt
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.stats import judgment_times, progress_by_annotator, progress_by_scenario, skip_reasons

st.header("Progress")
round_id = ui.pick_round()
me = ui.user().id  # the reads below check this account may read the round's labels
if round_id is None:
    st.stop()
with ui.db() as s:
    scenarios = progress_by_scenario(s, round_id, actor=me)
    annotators = progress_by_annotator(s, round_id, actor=me)
    times = judgment_times(s, round_id, actor=me)
    reasons = skip_reasons(s, round_id, actor=me)

regular = scenarios[~scenarios.gold] if scenarios.gold.any() else scenarios
needed = int(regular.needed.sum())
done = int(regular[["judged", "needed"]].min(axis=1).sum())
c1, c2, c3, c4 = st.columns(4)
c1.metric("Judgments", f"{done} / {needed}")
c2.metric("Scenarios complete", f"{int(regular.complete.sum())} / {len(regular)}")
c3.metric("Median time per judgment", f"{times.seconds.median():.0f} s" if len(times) else "–")
c4.metric("Skips", int(scenarios.skipped.sum()))
st.progress(done / needed if needed else 1.0)
over = scenarios[scenarios["over k"] > 0]
if len(over):
    st.warning(f"{len(over)} scenario(s) have more than k judgments ({int(over['over k'].sum())} extra): a submit on "
               "a lease that had lapsed and gone to someone else is kept, never lost, and counted here. All of "
               "them count in pools and exports; the k above counts at most k per scenario.",
               icon=":material/info:")

st.subheader("Per scenario")
st.dataframe(scenarios, hide_index=True, column_config={
    "judged": st.column_config.ProgressColumn("judged", min_value=0, max_value=int(scenarios.needed.max() or 1),
                                              format="%d")})
st.subheader("Per annotator")
st.dataframe(annotators, hide_index=True, column_config={
    "median s": st.column_config.NumberColumn(format="%.1f"), "p90 s": st.column_config.NumberColumn(format="%.1f"),
    "gold accuracy": st.column_config.NumberColumn(format="percent")})

left, right = st.columns(2)
with left:
    st.subheader("Time per judgment")
    if len(times):
        st.altair_chart(alt.Chart(times).mark_bar().encode(
            alt.X("seconds:Q", bin=alt.Bin(maxbins=30), title="seconds spent judging (pauses over a minute left out)"),
            alt.Y("count():Q", title="judgments"), alt.Color("annotator:N")), width="stretch")
    else:
        st.caption("No judgments yet.")
with right:
    st.subheader("Skip reasons")
    if len(reasons):
        st.altair_chart(alt.Chart(reasons).mark_bar().encode(
            alt.X("skips:Q"), alt.Y("reason:N", sort="-x", title=None)), width="stretch")
    else:
        st.caption("No skips.")
