"""Annotate: one scenario at a time, keyboard first.

Layout and key bindings only; the queue, the protocol and the write live in storyloop.annotator.
Every button acts through a callback that carries the shown task's idempotency key, so a click that
arrives after the page moved on (a double click, a queued rerun) changes nothing. The judging keys go
through storyloop.annotator.keys, which queues them, rather than button shortcuts, which merge presses.
"""

from __future__ import annotations

import secrets
from html import escape

import streamlit as st
from sqlalchemy.exc import OperationalError

from storyloop.annotator import keys, ui
from storyloop.annotator.history import edit_task
from storyloop.annotator.protocol import STEP_TITLES, Step
from storyloop.annotator.work_queue import (Task, annotator_progress, next_task, renew_lease, rounds_newest_first,
                                       save_draft)
from storyloop.annotator.submit import SKIP_REASONS, submit_task
from storyloop.annotator.view import ScenarioView, ShownCandidate, scenario_view, zoom_image
from storyloop.db.judgments import JudgmentError
from storyloop.db.models import Outcome

KEYS = [("1-9", "toggle candidate N in the current step"), ("Enter", "next step; submit at the last"),
        ("Backspace", "previous step"), ("A", "all bad (fail every candidate left)"), ("T", "tie among survivors"),
        ("S", "skip, then 1-4 for a reason (or type one, then Enter)"), ("Shift+N", "zoom candidate N"),
        ("U", "reopen your last judgment (E on My judgments: the selected one)"),
        ("Esc", "cancel skip / edit")]
MARKS_NOT_STORED = ("The database is not answering (it may be restarting): your marks are kept in this tab and are "
                    "stored with your next press once it is back.")


# -- callbacks: each checks that the click belongs to the task still on screen ----------------------

def _task(key: str) -> Task | None:
    task = st.session_state.get(ui.TASK)
    return task if task is not None and task.idempotency_key == key else None


def _save_draft(task: Task) -> None:
    """Keep the marks on the lease, so that a reload or a second tab resumes them: one UPDATE, and only
    when they changed since the last one (a press that changed nothing opens no database session). While
    the database does not answer the marks stay in this tab, and the next press stores them."""
    if task.draft_unsaved():
        try:
            ui.write_again_if_cut_off(lambda s: save_draft(s, task))
        except OperationalError:
            st.session_state[ui.JUDGE_WARNING] = MARKS_NOT_STORED


def _act(key: str, action: str, *args) -> None:
    if (task := _task(key)) is not None:
        st.session_state[ui.JUDGE_WARNING] = None  # only the last press's warning is still true
        getattr(task.draft, action)(*args)
        _save_draft(task)


def _submit(key: str, skip_reason: str | None = None) -> None:
    task = _task(key)
    if task is None:
        return  # already submitted: this is the second click of a double click
    if skip_reason is None and (what := task.draft.enter()) != "submit":
        # Shown inside the judging fragment, so the next press that ranks clears it (a flash at the top of the
        # page would stay until the next full run).
        st.session_state[ui.JUDGE_WARNING] = keys.NOTHING_RANKED if what == "incomplete" else None
        _save_draft(task)  # Enter moved on a step
        return
    attempts = 0

    def work(s):
        nonlocal attempts
        attempts += 1
        return submit_task(s, task, skip_reason=skip_reason)
    try:
        done = ui.write_again_if_cut_off(work)  # keyed: a commit that got through before the cut is found again
    except JudgmentError as exc:
        ui.flash("error", f"Not saved: {exc}")
        return
    except OperationalError:
        ui.flash("error", f"Not saved yet: {ui.DB_UNREACHABLE} Press Enter (or Submit) again in a moment.")
        return
    st.session_state[ui.TASK] = None
    st.session_state[ui.JUDGE_WARNING] = None
    st.session_state[ui.LAST_SUBMITTED] = done.scenario_id
    if done.created or attempts > 1:  # a second attempt that finds the judgment found the first one's
        what = "skipped" if done.outcome is Outcome.skipped else done.outcome.value.replace("_", " ")
        edit = f" (revision {done.revision})" if done.revision > 1 else ""
        ui.flash("toast", f"Saved: {what}{edit}. Press U to change it.")
    else:
        ui.flash("warning", "This scenario was already submitted (another tab or a double click): "
                            "the first submit is kept.")


def _skip_text(key: str) -> None:
    reason = st.session_state.get(f"skip-text-{key}", "").strip()
    if not reason:
        ui.flash("warning", "Type a reason, or pick one of the listed reasons.")
        return
    _submit(key, reason)


def _set_skipping(key: str, on: bool) -> None:
    if (task := _task(key)) is not None:
        task.skipping = on


def _cancel_edit(key: str) -> None:
    if _task(key) is not None:
        st.session_state[ui.TASK] = None


def _reopen_last() -> None:
    sid = st.session_state.get(ui.LAST_SUBMITTED)
    if sid is None:
        return
    try:
        with ui.db() as s:
            ui.open_edit(edit_task(s, ui.user().id, sid))
    except OperationalError:
        ui.flash("error", f"{ui.DB_UNREACHABLE} Press U again in a moment.")


# -- the page -------------------------------------------------------------------------------------

def _card_state(task: Task, cid: int) -> str:
    d = task.draft
    if cid not in d.active() and d.step is not Step.consistency:
        return "fail" if d.status(cid) in ("inconsistent", "bad anatomy") else "out"
    if not d.consistency[cid] or (d.step is not Step.consistency and not d.anatomy[cid]):
        return "fail"
    if d.step in (Step.consistency, Step.anatomy):
        return "pass"
    if d.tie or (d.ranking and d.ranking[0] == cid):
        return "best"
    return "ranked" if cid in d.ranking else "open"


# status -> (button label, material icon)
BUTTON = {"consistent": ("consistent", "check"), "inconsistent": ("inconsistent", "close"),
          "anatomy ok": ("anatomy ok", "check"), "bad anatomy": ("bad anatomy", "close"),
          "best": ("best", "star"), "tie": ("tie", "drag_handle"), "unranked": ("pick", "touch_app")}


@st.dialog("Zoom", width="large")
def _zoom(cand: ShownCandidate) -> None:
    st.image(zoom_image(ui.app_settings(), cand.image),
             caption=f"Candidate {cand.position} · {cand.image.width}×{cand.image.height}", width="stretch")


def _candidate_card(task: Task, cand: ShownCandidate) -> None:
    d, key, pos = task.draft, task.idempotency_key, cand.position
    state = _card_state(task, cand.candidate_id)
    with st.container(border=True, key=f"card-{pos}-{state}"):
        if cand.image.missing:
            st.markdown(f'<div class="sl-missing">Image missing from the store<br>'
                        f'<code>{cand.image.sha256[:16]}…</code></div>', unsafe_allow_html=True)
        else:
            st.image(cand.image.thumb, width="stretch")
        status = d.status(cand.candidate_id)
        active = cand.candidate_id in d.active() and not task.skipping
        label, icon = BUTTON.get(status, (status, "format_list_numbered"))
        with st.container(horizontal=True, gap="small", vertical_alignment="center", wrap=False):
            # the number is the card's key (1-9), now that keys are not button shortcuts with their own hint
            st.button(f"{pos} · {label}", icon=f":material/{icon}:", key=f"toggle-{key}-{pos}", on_click=_act,
                      args=(key, "toggle", pos),
                      disabled=not active, type="primary" if state in ("best", "ranked") else "secondary",
                      width="stretch")
            if st.button("", icon=":material/zoom_in:", key=f"zoom-{key}-{pos}", help=f"Zoom (Shift+{pos})",
                         type="tertiary", disabled=cand.image.missing):
                _zoom(cand)


def _steps(task: Task) -> str:
    order = [Step.consistency, Step.anatomy, Step.aesthetics]
    current = task.draft.step
    at = order.index(current) if current in order else len(order)
    spans = []
    for i, step in enumerate(order):
        cls = "on" if i == at else ("done" if i < at else "")
        spans.append(f'<span class="sl-step {cls}">{i + 1} · {STEP_TITLES[step]}</span>')
    if current is Step.all_bad:
        spans.append('<span class="sl-step on">→ all bad</span>')
    return '<div class="sl-steps">' + "".join(spans) + "</div>"


def _actions(task: Task) -> None:
    d, key = task.draft, task.idempotency_key
    with st.container(horizontal=True, gap="small"):
        st.button("Back", icon=":material/arrow_back:", key=f"back-{key}", on_click=_act, args=(key, "back"),
                  disabled=d.step is Step.consistency or task.skipping)
        st.button("All bad", key=f"allbad-{key}", on_click=_act, args=(key, "mark_all_bad"),
                  disabled=d.step not in (Step.consistency, Step.anatomy) or task.skipping)
        st.button("Tie", key=f"tie-{key}", on_click=_act, args=(key, "toggle_tie"),
                  disabled=d.step is not Step.aesthetics or len(d.survivors()) < 2 or task.skipping)
        st.button("Skip…", key=f"skip-{key}", on_click=_set_skipping, args=(key, True), disabled=task.skipping)
        if task.is_edit:
            st.button("Cancel edit", key=f"cancel-{key}", on_click=_cancel_edit, args=(key,))
        st.button("Submit" if d.at_last_step() else "Next step", icon=":material/keyboard_return:", key=f"enter-{key}",
                  on_click=_submit, args=(key,), type="primary", disabled=task.skipping)
        st.space("stretch")
        if st.session_state.get(ui.LAST_SUBMITTED) is not None and not task.is_edit:
            st.button("Change last", icon=":material/undo:", key="undo", on_click=_reopen_last)
        _keyboard_help()


def _skip_panel(task: Task, view: ScenarioView) -> None:
    key = task.idempotency_key
    with st.container(border=True, key="skip-panel"):
        st.markdown("**Skip this scenario. Why?** Your reason goes to the researchers; the scenario goes "
                    "back to the queue.")
        with st.container(horizontal=True, gap="small"):
            for i, reason in enumerate(SKIP_REASONS, start=1):
                st.button(reason, key=f"reason-{key}-{i}", on_click=_submit, args=(key, reason),
                          type="primary" if view.missing and i == 1 else "secondary")
        with st.container(horizontal=True, gap="small", vertical_alignment="bottom"):
            st.text_input("Another reason", key=f"skip-text-{key}", placeholder="e.g. the references show two people")
            st.button("Skip with this reason", key=f"skiptext-{key}", on_click=_skip_text, args=(key,))
            st.button("Cancel", key=f"skipcancel-{key}", on_click=_set_skipping, args=(key, False))


def _keys(task: Task, view: ScenarioView) -> None:
    """Apply the key presses not applied yet; a submit (or U, or Esc from an edit) reruns the page."""
    key = task.idempotency_key
    seen = max(st.session_state.get(ui.KEYS_SEEN, 0), task.keys_applied)  # a new session resumes after the draft's
    session = st.session_state.setdefault(ui.KEYS_SESSION, secrets.token_hex(8))
    events = keys.pressed(key, seen, session, carried_after=task.keys_applied or None)
    carried = sum(1 for ev in events if ev.get("session") != session and ev["seq"] > seen)
    done = keys.apply(task, events, seen)
    st.session_state[ui.KEYS_SEEN] = task.keys_applied = done.seen  # before acting: never applied twice
    if carried:
        ui.flash("toast", f"Reconnected: {carried} key press{'es' if carried > 1 else ''} made while the server "
                          "was away applied.")
    if done.seen != seen:  # new presses: the last one's warning (if any) replaces the one on screen
        st.session_state[ui.JUDGE_WARNING] = done.warning
    if done.leave != "submit":  # a submit drops the lease, and its draft with it
        _save_draft(task)  # (its warning, if the database did not answer, goes over the press's)
    if done.leave == "submit":
        _submit(key, done.reason)
    elif done.leave == "reopen":
        _reopen_last()
    elif done.leave == "cancel_edit":
        _cancel_edit(key)
    if st.session_state.get(ui.TASK) is not task or ui.FLASH in st.session_state:
        st.rerun(scope="app")
    if done.zoom is not None and done.zoom <= len(view.candidates) and not view.candidates[done.zoom - 1].image.missing:
        _zoom(view.candidates[done.zoom - 1])


@st.fragment
def judge(view: ScenarioView) -> None:
    """The part that changes on every key press; reruns alone, without the database."""
    task: Task | None = st.session_state.get(ui.TASK)
    if task is None or task.scenario_id != view.scenario_id:
        st.rerun(scope="app")  # submitted: fetch the next scenario
    task.touch()  # every run here follows an action (or the page's first showing): judging time
    _keys(task, view)
    st.markdown(_steps(task), unsafe_allow_html=True)
    _actions(task)
    st.caption(task.draft.hint(view.characters) if not task.skipping
               else "Pick a reason: 1-4, or type one and press Enter. Esc cancels.")
    if (warning := st.session_state.get(ui.JUDGE_WARNING)) and not task.skipping:
        st.warning(warning, icon=":material/warning:")
    if task.skipping:
        _skip_panel(task, view)
    if view.missing:
        st.warning(f"{len(view.missing)} candidate image(s) are missing from the store (placeholders below). "
                   "Judge what you can see, or press S and 1 to skip: an image is missing.",
                   icon=":material/broken_image:")
    per_row, rows = grid_shape(len(view.candidates))
    with st.container(key=f"cards-{min(rows, 3)}"):  # the row count sizes the images (ui.CSS)
        for start in range(0, len(view.candidates), per_row):
            cols = st.columns(per_row, gap="small")
            for col, cand in zip(cols, view.candidates[start:start + per_row]):
                with col:
                    _candidate_card(task, cand)


def grid_shape(candidates: int) -> tuple[int, int]:
    """(cards per row, rows) of the judging grid."""
    per_row = 4 if candidates > 4 else max(candidates, 2)
    return per_row, -(-candidates // per_row)


def _progress(progress) -> None:
    """The annotator's own counts, top right: never anyone else's labels."""
    if progress is None:
        return
    done = progress.round_done / progress.round_needed if progress.round_needed else 1.0
    st.markdown(f'<div class="sl-meta" style="text-align:right">Round <b>{escape(progress.round_name)}</b> · '
                f'judged by you <b>{progress.judged_by_me}</b> · left for you <b>{progress.left_for_me}</b></div>',
                unsafe_allow_html=True)
    st.progress(min(done, 1.0), text=f"Round: {progress.round_done} of {progress.round_needed} judgments")


def _keyboard_help() -> None:
    with st.popover("Keys", icon=":material/keyboard:"):
        rows = "".join(f"<tr><td><kbd>{k}</kbd></td><td>{what}</td></tr>" for k, what in KEYS)
        st.markdown(f'<table class="sl-keys">{rows}</table>', unsafe_allow_html=True)


def page() -> None:
    who, settings = ui.user(), ui.app_settings()
    task: Task | None = st.session_state.get(ui.TASK)
    with ui.db() as s:
        if task is None or task.user_id != who.id:
            task = next_task(s, who.id)
            aside = st.session_state.pop(ui.SET_ASIDE, None)
            if task is not None and aside is not None and (aside.user_id, aside.scenario_id) == (who.id, task.scenario_id):
                task = aside  # back from an edit to the scenario it interrupted, with the marks made before
            st.session_state[ui.TASK] = task
        elif not task.is_edit:
            renew_lease(s, who.id, task.scenario_id)
        view = scenario_view(s, settings, task.scenario_id, task.shown_order) if task else None
        round_id = task.round_id if task else next((r.id for r in rounds_newest_first(s)), None)
        progress = annotator_progress(s, who.id, round_id) if round_id is not None else None
    if (item := st.session_state.pop(ui.FLASH, None)) is not None:
        kind, message = item
        if kind == "toast":
            st.toast(message, icon=":material/check_circle:")
        else:
            ui.flash(kind, message)
    ui.show_flash()
    head, side = st.columns([3, 1], vertical_alignment="top")
    with side:
        _progress(progress)
    with head:
        if task is None:
            st.success("Nothing left for you to judge right now. Thank you!", icon=":material/done_all:")
            if st.session_state.get(ui.LAST_SUBMITTED) is not None:
                st.button("Change last", icon=":material/undo:", key="undo", on_click=_reopen_last, shortcut="U")
            return
        if task.is_edit:
            st.info(f"Editing your judgment (revision {task.base_revision}); submitting stores revision "
                    f"{task.base_revision + 1} and keeps the old one.", icon=":material/edit:")
        st.markdown(f'<div class="sl-meta">{escape(view.round_name)} · story {escape(view.story_id)} · frame '
                    f'{view.frame_index} · scenario {escape(view.key)}</div>'
                    f'<div class="sl-prompt" {keys.on_screen(task.idempotency_key)}>{escape(view.prompt)}</div>',
                    unsafe_allow_html=True)
    # The reference column is about one candidate card wide, and its images share the cards' height limit:
    # a reference is never shown larger than the candidates judged against it.
    per_row, rows = grid_shape(len(view.candidates))
    refs, grid = st.columns([0.9, per_row], gap="medium")
    with refs, st.container(key=f"refs-{min(rows, 3)}"):
        ui.show_references(view)
    with grid:
        judge(view)


page()
