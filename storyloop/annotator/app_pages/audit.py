"""Audit log (admins): who logged in or failed to, from where; account changes, exports, gold, rounds, studies."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from storyloop.annotator import ui
from storyloop.db.audit import events
from storyloop.db.models import Role

if ui.user().role is not Role.admin:  # the navigation never offers it; a typed URL gets nothing either
    st.error("The audit log is for admins.")
    st.stop()
st.header("Audit log")
left, right = st.columns([1, 1])
who = left.text_input("Account (by or about)", key="audit_user").strip() or None
days = right.number_input("Days back", min_value=1, max_value=3650, value=7, key="audit_days")
since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=int(days))
with ui.db() as s:
    rows = [{"when (UTC)": e.at, "who": e.actor, "action": e.action, "target": e.target, "client": e.client,
             "details": e.details} for e in events(s, who, since.to_pydatetime(), limit=2000)]
table = pd.DataFrame(rows, columns=["when (UTC)", "who", "action", "target", "client", "details"])
st.caption(f"{len(table)} event(s), newest first. The log is append-only: the database refuses to change or "
           "delete an event. `storyloop audit --json` gives the same from the command line.")
st.dataframe(table.astype({"details": str}), hide_index=True)
