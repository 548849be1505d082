"""Runs: every DPO run's curves, config, pair set, status and failure reason, from the database."""

from __future__ import annotations

import altair as alt
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.runs import run_curves, run_detail, runs_table

st.header("DPO runs")
with ui.db() as s:
    runs = runs_table(s)
if runs.empty:
    st.info("No DPO runs yet: `storyloop dpo train --round NAME --output-dir DIR` starts one.")
    st.stop()
st.dataframe(runs, hide_index=True, column_config={
    "loss": st.column_config.NumberColumn(format="%.4f"),
    "rewards/accuracies": st.column_config.NumberColumn(format="percent"),
    "rewards/margins": st.column_config.NumberColumn(format="%.4f")})
labels = {int(r.run): f"run {r.run} · {r['round']} · {r.status}" for _, r in runs.iterrows()}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="runs_page_run")
with ui.db() as s:
    curves = run_curves(s, run_id)
    detail = run_detail(s, run_id)
if detail["failure_reason"]:
    st.error(f"Failed: {detail['failure_reason']}")
if curves.empty:
    st.caption("This run has logged no metrics yet.")
else:
    metrics = sorted(curves.metric.unique(), key=lambda m: (m.startswith("eval/"), m))
    for row in range(0, len(metrics), 2):
        for column, metric in zip(st.columns(2), metrics[row:row + 2]):
            with column:
                st.altair_chart(alt.Chart(curves[curves.metric == metric], title=metric).mark_line(point=True)
                                .encode(alt.X("step:Q"), alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False))),
                                width="stretch")
with st.expander("Config, pair set, code version"):
    st.json(detail)
