"""Export: download a round's judgments as CSV, and the command for the DPO preference set."""

from __future__ import annotations

import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.stats import judgments_table, to_safe_csv
from storyloop.db import audit

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
def _record_download() -> None:
    with ui.db() as s:
        audit.record(s, "export", actor_id=ui.user().id, target=name, details={"format": "csv", "rows": len(table)})


st.download_button("Download judgments (CSV)", to_safe_csv(table), file_name=f"{name}-judgments.csv",
                   mime="text/csv", icon=":material/download:", type="primary", disabled=table.empty,
                   on_click=_record_download)
st.dataframe(table.head(200), hide_index=True)
st.subheader("Preference set for Diffusion-DPO")
st.markdown("Winner × loser pairs with their reference images are exported from the command line:")
st.code(f"storyloop pairs stats --round {name}\nstoryloop export --round {name} --out {name}-prefs --user {ui.user().username}",
        language="bash")
