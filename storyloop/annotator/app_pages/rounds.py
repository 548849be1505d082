"""Rounds: every round's size, its ViStoryBench results side by side, and how it is annotated (k, gold rate,
skip policy)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.rounds import list_rounds, update_round
from storyloop.db.models import SkipPolicy
from storyloop.db.rounds import RoundError
from storyloop.vistory.results import PAPER_COLUMNS, result_rows

POLICY_HELP = {
    SkipPolicy.others: "back to the queue for the other annotators (the skip does not count)",
    SkipPolicy.everyone_last: "back to the queue for everyone; the skipper sees it again last",
    SkipPolicy.counts: "a skip counts as one of the k judgments",
}

st.header("Rounds")
ui.show_flash()
with ui.db() as s:
    rounds = list_rounds(s)
    results = result_rows(s)
if not rounds:
    st.info("No rounds yet: create one with `storyloop round create`.")
    st.stop()
st.dataframe(pd.DataFrame([{"round": r.name, "parent": r.parent or "", "scenarios": r.scenarios,
                            "candidates": r.candidates, "judgments": r.judgments, "k": r.k,
                            "gold rate": r.gold_rate, "skip policy": r.skip_policy.value} for r in rounds]),
             hide_index=True)
if results:
    st.subheader("ViStoryBench")
    st.caption("The official evaluator's summaries stored with `storyloop vistory results`, on the paper's scale: "
               "CSD and CIDS × 100, alignment = mean of scene, camera and character action ÷ 4 × 100.")
    st.dataframe(pd.DataFrame([{"round": r.round, "method": r.method, "mode": r.mode, "lang": r.language,
                                "split": r.split, "evaluated": r.evaluated_at,
                                **{c: r.paper[c] for c in PAPER_COLUMNS}} for r in results]),
                 hide_index=True)

round_id = ui.pick_round()
r = next(r for r in rounds if r.id == round_id)
st.subheader(f"Annotation settings of {r.name}")
with st.form("round-settings"):
    k = st.number_input("Judgments per scenario (k)", min_value=1, max_value=50, value=r.k, step=1)
    gold_rate = st.slider("Gold rate (share of an annotator's items that are gold)", 0.0, 0.5, float(r.gold_rate),
                          0.05, help="Gold answers are set on the Gallery page.")
    policy = st.radio("Skipped scenarios go", list(SkipPolicy), index=list(SkipPolicy).index(r.skip_policy),
                      format_func=POLICY_HELP.get)
    if st.form_submit_button("Save", type="primary"):
        try:
            with ui.db() as s:
                update_round(s, r.id, int(k), float(gold_rate), policy, actor=ui.user().id)
        except RoundError as exc:
            st.error(str(exc))
        else:  # rerun, so the table above shows what was saved
            ui.flash("success", f"Saved: k = {int(k)}, gold rate {gold_rate:.2f}, skips {POLICY_HELP[policy]}.")
            st.rerun()
