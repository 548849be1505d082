"""Gallery: a scenario's candidates with every annotator's labels aggregated, and its gold answer."""

from __future__ import annotations

from html import escape

import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.gold import GoldError, clear_gold, get_gold, set_gold
from storyloop.annotator.stats import scenario_outcome
from storyloop.annotator.view import gallery_view, scenario_choices
from storyloop.db.models import Outcome

VERDICT = {"winner": ("best", "best"), "loser": ("failed a check", "fail"), "survived": ("survived", "pass"),
           "split": ("annotators split", "open"), "undecided": ("not judged yet", "open")}

st.header("Gallery")
ui.show_flash()
round_id = ui.pick_round()
me = ui.user().id  # the reads below check this account may read the round's labels
if round_id is None:
    st.stop()
with ui.db() as s:
    choices = scenario_choices(s, round_id)
if not choices:
    st.info("This round has no scenarios.")
    st.stop()
labels = dict(choices)
sid = st.selectbox("Scenario", list(labels), format_func=labels.get, key="gallery-scenario")
with ui.db() as s:
    view = gallery_view(s, ui.app_settings(), sid)
    agg = scenario_outcome(s, sid, actor=me)
    gold = get_gold(s, sid, actor=me)
    gold_answer = (Outcome(gold.outcome), list(gold.winner_candidate_ids), list(gold.loser_candidate_ids)) if gold else None

st.markdown(f'<div class="sl-meta">story {escape(view.story_id)} · frame {view.frame_index} · '
            f'scenario {escape(view.key)}</div><div class="sl-prompt">{escape(view.prompt)}</div>',
            unsafe_allow_html=True)
votes = ", ".join(f"{o.replace('_', ' ')} {n}" for o, n in agg.outcomes.most_common()) or "none"
st.markdown(f"**Aggregated outcome: {agg.outcome.replace('_', ' ')}** · {agg.judgments} judgment(s) "
            f"({votes}) · {agg.skipped} skip(s)" + (" · :orange-badge[gold]" if gold else ""))

refs, grid = st.columns([1, 2.7], gap="medium")
with refs:
    ui.show_references(view)
tally = {t.candidate_id: t for t in agg.candidates}
with grid:
    per_row = 4 if len(view.candidates) > 4 else max(len(view.candidates), 2)
    for start in range(0, len(view.candidates), per_row):
        for col, cand in zip(st.columns(per_row, gap="small"), view.candidates[start:start + per_row]):
            t = tally[cand.candidate_id]
            word, css = VERDICT[t.verdict]
            with col, st.container(border=True, key=f"card-{cand.position}-{css}"):
                if cand.image.missing:
                    st.markdown('<div class="sl-missing">Image missing from the store</div>', unsafe_allow_html=True)
                else:
                    st.image(cand.image.thumb, width="stretch")
                st.markdown(f"**Candidate {t.index + 1}** · {word}")  # numbered from 1, as annotators see them
                st.caption(f"consistent {t.consistency_pass}/{agg.judgments} · anatomy ok "
                           f"{t.anatomy_pass}/{t.anatomy_asked} · best {t.best}/{agg.judgments}")

st.subheader("Gold answer")
st.caption("Gold scenarios are shown to every annotator at the round's gold rate and scored on the Agreement page.")
names = {c.candidate_id: f"candidate {tally[c.candidate_id].index + 1}" for c in view.candidates}
default_winners = gold_answer[1] if gold_answer else [t.candidate_id for t in agg.candidates if t.verdict == "winner"]
default_losers = gold_answer[2] if gold_answer else [t.candidate_id for t in agg.candidates if t.verdict == "loser"]
outcomes = [Outcome.ranked, Outcome.tie, Outcome.all_bad]
default_outcome = gold_answer[0] if gold_answer else (Outcome(agg.outcome) if agg.outcome in {o.value for o in outcomes}
                                                      else Outcome.ranked)
with st.form(f"gold-{sid}"):
    outcome = st.radio("Outcome", outcomes, index=outcomes.index(default_outcome), horizontal=True,
                       format_func=lambda o: o.value.replace("_", " "))
    winners = st.multiselect("Winners", list(names), default=default_winners, format_func=names.get)
    losers = st.multiselect("Losers (must fail a check)", list(names), default=default_losers, format_func=names.get)
    save, remove = st.columns([1, 5])
    saved = save.form_submit_button("Save gold", type="primary")
    removed = remove.form_submit_button("Remove gold", disabled=gold is None)
if saved:
    try:
        with ui.db() as s:
            set_gold(s, sid, outcome, winners, losers, actor=ui.user().id)
    except GoldError as exc:
        st.error(f"Not saved: {exc}")
    else:  # rerun, so the badge, the form and its buttons show the gold answer now stored
        ui.flash("success", "Gold answer saved.")
        st.rerun()
if removed:
    with ui.db() as s:
        clear_gold(s, sid, actor=ui.user().id)
    ui.flash("success", "Gold answer removed.")
    st.rerun()
