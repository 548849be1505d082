"""Export: download a round's judgments as CSV, and the command for the DPO preference set."""

from __future__ import annotations

import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.stats import export_judgments_csv, judgments_table
from storyloop.db import session_scope

st.header("Export")
round_id = ui.pick_round()
me = ui.user().id  # the reads below check this account may read the round's labels
if round_id is None:
    st.stop()
with ui.db() as s:
    table = judgments_table(s, round_id, actor=me)
name = table["round"].iloc[0] if len(table) else f"round-{round_id}"
judged = table[["scenario", "annotator", "outcome"]].drop_duplicates()
skips = int((judged.outcome == "skipped").sum())
# Progress counts judgments without skips; say how many of these are skips so the two pages agree.
st.markdown(f"**{len(judged)}** current judgments in this round, **{skips}** of them skips. One row per judged "
            "candidate (a skip is one row). Edits are folded in: the latest revision counts.")
db_url, actor = ui.app_settings().db_url, ui.user().id


def _export() -> bytes:
    """Made when Download is clicked (on a thread of its own): the role is checked then, and the export logged."""
    with session_scope(db_url) as s:
        return export_judgments_csv(s, round_id, actor=actor)


st.download_button("Download judgments (CSV)", _export, file_name=f"{name}-judgments.csv", mime="text/csv",
                   icon=":material/download:", type="primary", disabled=table.empty, on_click="ignore")
st.dataframe(table.head(200), hide_index=True)
st.subheader("Preference set for Diffusion-DPO")
st.markdown("Winner × loser pairs with their reference images are exported from the command line:")
st.code(f"storyloop pairs stats --round {name}\nstoryloop export --round {name} --out {name}-prefs --user {ui.user().username}",
        language="bash")
