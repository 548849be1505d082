"""My judgments: the annotator's own latest judgments, and reopening one to change it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.history import edit_task, my_history


def _positions(places: list[int]) -> str:
    return ", ".join(f"#{p}" for p in places) or "–"


who = ui.user()
st.header("My judgments")
st.caption("Your latest judgment of each scenario, newest first. Changing one stores a new revision; "
           "the earlier ones are kept. Only you see your labels.")
with ui.db() as s:
    rows = my_history(s, who.id, limit=200)
if not rows:
    st.info("You have not judged anything yet.")
    st.stop()
table = pd.DataFrame([{
    "scenario": r.scenario_key, "round": r.round_name, "prompt": r.prompt,
    "outcome": r.outcome.value.replace("_", " "), "best": _positions(r.best_positions),
    "failed": _positions(r.failed_positions), "skip reason": r.skip_reason or "", "revision": r.revision,
    "seconds": round(r.seconds, 1), "submitted": r.submitted_at} for r in rows])
picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key="history-table",
                      column_config={"submitted": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                                     "prompt": st.column_config.TextColumn(width="large")})
st.caption("Best and failed are places in the grid as you saw it (#1 = first card).")
selected = picked.selection.rows
target = rows[selected[0]] if selected else rows[0]
label = f"Change my judgment of {target.scenario_key}" + ("" if selected else " (the latest)")
if st.button(label, icon=":material/edit:", type="primary", key="edit-judgment", shortcut="E"):
    with ui.db() as s:
        ui.open_edit(edit_task(s, who.id, target.scenario_id))
    st.switch_page(ui.PAGES_DIR / "annotate.py")
