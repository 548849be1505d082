"""Studies: answer a blind study, one item at a time, keyboard first.

Pairwise: the prompt, the references and two frames; 1 / ← left, 2 / → right, T tie, B both bad. Likert: one
arm's story next to its references; 1-5 per criterion, Tab between them, Enter submits. Layout and bindings
only: the queue and the write are storyloop.studies.queue's, the keys storyloop.annotator.study_keys'. The page
never learns an arm: it gets image bytes and prompts (study_view), and names the item on screen by a random
token, never by its id.
"""

from __future__ import annotations

import secrets
from html import escape

import streamlit as st

from storyloop.annotator import keys, ui
from storyloop.annotator.study_keys import StudyApplied, StudyScreen, apply_presses, press
from storyloop.annotator.study_view import ShownItem, open_studies, pick_study, shown_item
from storyloop.annotator.submit import SKIP_REASONS
from storyloop.db.models import StudyKind
from storyloop.studies.errors import StudyError
from storyloop.studies.queue import (CRITERIA, CRITERIA_TITLES, next_study_task, release_study_item,
                                     renew_study_lease, study_progress, submit_study_task, undo_task)

SKIP_HELP = ("S", "skip, then 1-4 for a reason (or type one, then Enter)")
PAIRWISE_HELP = [("1 or ←", "the left frame is better"), ("2 or →", "the right frame is better"), ("T", "a tie"),
                 ("B", "both are bad"), SKIP_HELP, ("U", "change your last answer"), ("Esc", "cancel skip / edit")]
LIKERT_HELP = [("1-5", "rate the current criterion (then on to the next)"), ("Tab", "next criterion (Shift+Tab: back)"),
               ("Backspace", "clear the current criterion"), ("Enter", "submit, once all three are rated"), SKIP_HELP,
               ("U", "change your last answer"), ("Esc", "cancel skip / edit")]
CHOICE_BUTTONS = [("1", "Left is better", ":material/arrow_back:"), ("2", "Right is better", ":material/arrow_forward:"),
                  ("t", "Tie", ":material/drag_handle:"), ("b", "Both bad", ":material/close:")]
SAID = {"left": "left is better", "right": "right is better", "tie": "a tie", "both_bad": "both bad"}


# -- callbacks: each checks that the click belongs to the screen still shown -----------------------

def _screen(key: str) -> StudyScreen | None:
    screen = st.session_state.get(ui.STUDY_SCREEN)
    return screen if screen is not None and screen.key == key else None


def _act(key: str, pressed: str, text: str | None = None) -> None:
    """A button: the key it stands for, through the same rule as the keyboard."""
    if (screen := _screen(key)) is not None:
        out = StudyApplied(0)
        press(screen, pressed, out, text=text)
        _carry_out(screen, out)


def _rate(key: str, criterion: int, score: int) -> None:
    if (screen := _screen(key)) is not None and screen.likert is not None and not screen.skipping:
        screen.likert.current = criterion
        _act(key, str(score))


def _skip_text(key: str) -> None:
    reason = st.session_state.get(f"skip-text-{key}", "").strip()
    if not reason:
        ui.flash("warning", "Type a reason, or pick one of the listed reasons.")
        return
    _act(key, "Enter", reason)


def _carry_out(screen: StudyScreen, out: StudyApplied) -> None:
    if out.warning:
        ui.flash("warning", out.warning)
    if out.leave == "submit":
        _submit(screen, out)
    elif out.leave == "reopen":
        _reopen_last()
    elif out.leave == "cancel_edit":
        st.session_state[ui.STUDY_SCREEN] = None


def _submit(screen: StudyScreen, out: StudyApplied) -> None:
    try:
        with ui.db() as s:
            done = submit_study_task(s, screen.task, choice=out.choice, scores=out.scores, skip_reason=out.reason)
    except StudyError as exc:
        ui.flash("error", f"Not saved: {exc}")
        return
    st.session_state[ui.STUDY_SCREEN] = None
    st.session_state.setdefault(ui.STUDY_ANSWERED, set()).add(screen.task.study_id)
    if done.created:
        what = ("skipped" if out.reason is not None else SAID[out.choice.value] if out.choice is not None
                else " · ".join(f"{c.upper()} {getattr(out.scores, c)}" for c in CRITERIA))
        edit = f" (revision {done.revision})" if done.revision > 1 else ""
        ui.flash("toast", f"Saved: {what}{edit}. Press U to change it.")
    else:
        ui.flash("warning", "This item was already answered (another tab or a double click): the first answer is kept.")


def _reopen_last() -> None:
    study_id = st.session_state.get(ui.STUDY)
    with ui.db() as s:
        edit = undo_task(s, ui.user().id, study_id) if study_id is not None else None
    if edit is None:
        return
    current = st.session_state.get(ui.STUDY_SCREEN)
    if current is not None and not current.task.is_edit:
        st.session_state[ui.STUDY_ASIDE] = current  # comes back, ratings and all, after the edit
    st.session_state[ui.STUDY_SCREEN] = StudyScreen.of(edit)


def _change_study(study_id: int) -> None:
    """Another study picked: let go of this one's item at once, so that nobody waits on its lease."""
    screen = st.session_state.pop(ui.STUDY_SCREEN, None)
    st.session_state.pop(ui.STUDY_ASIDE, None)
    if screen is not None and not screen.task.is_edit:
        with ui.db() as s:
            release_study_item(s, screen.task.user_id, screen.task.item_id)
    st.session_state[ui.STUDY] = study_id


# -- the page -------------------------------------------------------------------------------------

def _keys(screen: StudyScreen) -> None:
    """Apply the key presses not applied yet; a submit (or U, or Esc from an edit) reruns the page."""
    seen = st.session_state.get(ui.STUDY_KEYS_SEEN, 0)
    session = st.session_state.setdefault(ui.KEYS_SESSION, secrets.token_hex(8))
    done = apply_presses(screen, keys.pressed(screen.key, seen, session, screen.page_keys(), "study-keys"), seen)
    st.session_state[ui.STUDY_KEYS_SEEN] = done.seen  # before acting: a press is never applied twice
    _carry_out(screen, done)
    if st.session_state.get(ui.STUDY_SCREEN) is not screen or ui.FLASH in st.session_state:
        st.rerun(scope="app")


def _keyboard_help(rows: list[tuple[str, str]]) -> None:
    with st.popover("Keys", icon=":material/keyboard:"):
        table = "".join(f"<tr><td><kbd>{k}</kbd></td><td>{what}</td></tr>" for k, what in rows)
        st.markdown(f'<table class="sl-keys">{table}</table>', unsafe_allow_html=True)


def _skip_panel(screen: StudyScreen) -> None:
    key = screen.key
    with st.container(border=True, key="skip-panel"):
        st.markdown("**Skip this item. Why?** Your reason goes to the researchers; the item goes back to the queue.")
        with st.container(horizontal=True, gap="small"):
            for i, reason in enumerate(SKIP_REASONS, start=1):
                st.button(reason, key=f"reason-{key}-{i}", on_click=_act, args=(key, str(i)))
        with st.container(horizontal=True, gap="small", vertical_alignment="bottom"):
            st.text_input("Another reason", key=f"skip-text-{key}", placeholder="e.g. the two frames are the same")
            st.button("Skip with this reason", key=f"skiptext-{key}", on_click=_skip_text, args=(key,))
            st.button("Cancel", key=f"skipcancel-{key}", on_click=_act, args=(key, "Escape"))


def _common_actions(screen: StudyScreen, help_rows: list[tuple[str, str]]) -> None:
    key = screen.key
    st.button("Skip…", key=f"skip-{key}", on_click=_act, args=(key, "s"), disabled=screen.skipping)
    if screen.task.is_edit:
        st.button("Cancel edit", key=f"cancel-{key}", on_click=_act, args=(key, "Escape"))
    st.space("stretch")
    if screen.task.study_id in st.session_state.get(ui.STUDY_ANSWERED, ()) and not screen.task.is_edit:
        st.button("Change last", icon=":material/undo:", key="undo", on_click=_act, args=(key, "u"))
    _keyboard_help(help_rows)


def _pairwise_controls(screen: StudyScreen) -> None:
    key = screen.key
    with st.container(horizontal=True, gap="small"):
        for pressed, label, icon in CHOICE_BUTTONS:
            st.button(label, icon=icon, key=f"choice-{key}-{pressed}", on_click=_act, args=(key, pressed),
                      disabled=screen.skipping, type="primary" if pressed in "12" else "secondary")
        _common_actions(screen, PAIRWISE_HELP)
    st.caption("Which frame fits the prompt and the references better? 1 or ← left, 2 or → right, T tie, B both bad."
               if not screen.skipping else "Pick a reason: 1-4, or type one and press Enter. Esc cancels.")


def _likert_controls(screen: StudyScreen) -> None:
    key, draft = screen.key, screen.likert
    for i, crit in enumerate(CRITERIA):
        on = i == draft.current and not screen.skipping
        with st.container(horizontal=True, gap="small", vertical_alignment="center", key=f"crit-{crit}-{'on' if on else 'off'}"):
            mark = "▶ " if on else ""
            st.markdown(f'<div class="sl-step {"on" if on else ("done" if draft.scores[crit] else "")}" '
                        f'style="min-width:15rem">{mark}{i + 1} · {CRITERIA_TITLES[crit]}</div>', unsafe_allow_html=True)
            for score in range(1, 6):
                st.button(str(score), key=f"rate-{key}-{crit}-{score}", on_click=_rate, args=(key, i, score),
                          type="primary" if draft.scores[crit] == score else "secondary", disabled=screen.skipping)
    with st.container(horizontal=True, gap="small"):
        st.button("Submit", icon=":material/keyboard_return:", key=f"enter-{key}", on_click=_act, args=(key, "Enter"),
                  type="primary", disabled=screen.skipping or not draft.complete)
        _common_actions(screen, LIKERT_HELP)
    st.caption("Rate the story 1 (poor) to 5 (excellent) on each criterion: the keys 1-5 rate the marked one and "
               "move on, Tab moves between them, Enter submits." if not screen.skipping
               else "Pick a reason: 1-4, or type one and press Enter. Esc cancels.")


@st.fragment
def answer(key: str) -> None:
    """The part that changes on every key press; reruns alone, without the database."""
    screen: StudyScreen | None = st.session_state.get(ui.STUDY_SCREEN)
    if screen is None or screen.key != key:
        st.rerun(scope="app")  # submitted: fetch the next item
    _keys(screen)
    if screen.likert is not None:
        _likert_controls(screen)
    else:
        _pairwise_controls(screen)
    if screen.skipping:
        _skip_panel(screen)


def _image(data: bytes | None, caption: str | None = None) -> None:
    if data is None:
        st.markdown('<div class="sl-missing">Image missing from the store</div>', unsafe_allow_html=True)
    else:
        st.image(data, width="stretch", caption=caption)


def _references(item: ShownItem) -> None:
    refs = item.references
    with st.container(key="study-refs"):
        st.markdown("**References**")
        for i, ref in enumerate(refs, start=1):
            _image(ref, f"reference {i}" if len(refs) > 1 else None)


def _pairwise(screen: StudyScreen, item: ShownItem) -> None:
    st.markdown(f'<div class="sl-prompt">{escape(item.frames[0].prompt)}</div>', unsafe_allow_html=True)
    answer(screen.key)
    refs, pair = st.columns([1, 3.2], gap="medium")
    with refs:
        _references(item)
    with pair, st.container(key="study-pair"):
        left, right = st.columns(2, gap="medium")
        for col, side, data in ((left, "Left · 1", item.left), (right, "Right · 2", item.right)):
            with col:
                st.markdown(f'<div class="sl-side">{side}</div>', unsafe_allow_html=True)
                _image(data)
    _shown(screen.key)


def _likert(screen: StudyScreen, item: ShownItem) -> None:
    st.markdown(f'<div class="sl-prompt">Rate this story ({len(item.frames)} frames)</div>', unsafe_allow_html=True)
    answer(screen.key)
    refs, story = st.columns([1, 3.2], gap="medium")
    with refs:
        _references(item)
    with story, st.container(key="study-story"):
        per_row = min(max(len(item.frames), 1), 4)
        for start in range(0, len(item.frames), per_row):
            for col, (n, frame) in zip(st.columns(per_row, gap="small"),
                                       enumerate(item.frames[start:start + per_row], start=start + 1)):
                with col:
                    _image(frame.image)
                    st.markdown(f'<div class="sl-meta">{n}. {escape(frame.prompt)}</div>', unsafe_allow_html=True)
    _shown(screen.key)


def _shown(key: str) -> None:
    """Mark the item as on screen, after its images: a press answers at once, and consecutive items can share
    a prompt, so a press counts for the new item only once the page has drawn it all (keys.on_screen)."""
    st.markdown(f'<div class="sl-shown" {keys.on_screen(key)}></div>', unsafe_allow_html=True)


def _pick(studies) -> int | None:
    study_id = pick_study(studies, st.session_state.get(ui.STUDY))
    st.session_state[ui.STUDY] = study_id
    choices = [s for s in studies if s.left_for_me or s.study_id == study_id]
    if len(choices) > 1:
        ids = [s.study_id for s in choices]
        # Labels that do not change as answers come in: a changed label made the browser send the picker's
        # value again, which read as a new pick and dropped the item on screen (and the key pressed on it).
        names = {s.study_id: f"{s.name} · {s.kind.value}" for s in choices}
        chosen = st.selectbox("Study", ids, format_func=names.get, index=ids.index(study_id), key="study-picker",
                              width=420)
        if chosen != study_id:
            _change_study(chosen)
            study_id = chosen
    return study_id


def _screen_for(s, who, settings, study_id: int) -> StudyScreen | None:
    screen: StudyScreen | None = st.session_state.get(ui.STUDY_SCREEN)
    if screen is None or screen.task.user_id != who.id or screen.task.study_id != study_id:
        task = next_study_task(s, who.id, study_id)
        aside = st.session_state.pop(ui.STUDY_ASIDE, None)
        if task is not None and aside is not None and (aside.task.user_id, aside.task.item_id) == (who.id, task.item_id):
            screen = aside  # back from an edit to the item it interrupted, with the ratings given before
        else:
            screen = StudyScreen.of(task) if task is not None else None
        st.session_state[ui.STUDY_SCREEN] = screen
    elif not screen.task.is_edit:
        renew_study_lease(s, who.id, screen.task.item_id)
    return screen


def page() -> None:
    who, settings = ui.user(), ui.app_settings()
    with ui.db() as s:
        studies = open_studies(s, who.id)
    if not studies:
        st.info("No studies yet: a researcher creates one with `storyloop study create`.")
        return
    head, side = st.columns([3, 1], vertical_alignment="top")
    with head:
        study_id = _pick(studies)
    with ui.db() as s:
        screen = _screen_for(s, who, settings, study_id)
        item = shown_item(s, settings, screen.task) if screen is not None else None
        progress = study_progress(s, who.id, study_id)
    if (flashed := st.session_state.pop(ui.FLASH, None)) is not None:
        kind, message = flashed
        if kind == "toast":
            st.toast(message, icon=":material/check_circle:")
        else:
            ui.flash(kind, message)
    with side:
        st.markdown(f'<div class="sl-meta" style="text-align:right">Study <b>{escape(progress.study_name)}</b> · '
                    f'answered by you <b>{progress.answered_by_me}</b> · left for you <b>{progress.left_for_me}</b></div>',
                    unsafe_allow_html=True)
        done = progress.done / progress.needed if progress.needed else 1.0
        st.progress(min(done, 1.0), text=f"Study: {progress.done} of {progress.needed} answers")
    with head:
        ui.show_flash()
        if screen is None:
            st.success("Nothing left for you in this study right now. Thank you!", icon=":material/done_all:")
            if study_id in st.session_state.get(ui.STUDY_ANSWERED, ()):
                st.button("Change last", icon=":material/undo:", key="undo", on_click=_reopen_last, shortcut="U")
            return
        if screen.task.is_edit:
            prev = screen.task.previous
            said = (f"skipped ({prev.skip_reason})" if prev.skip_reason else SAID[prev.choice.value] if prev.choice
                    else " · ".join(f"{c.upper()} {getattr(prev, c)}" for c in CRITERIA))
            st.info(f"Editing your answer ({said}, revision {screen.task.base_revision}); submitting stores revision "
                    f"{screen.task.base_revision + 1} and keeps the old one.", icon=":material/edit:")
        if item.missing:
            st.warning("An image of this item is missing from the store: press S and 1 to skip it.",
                       icon=":material/broken_image:")
    if item.kind is StudyKind.pairwise:
        _pairwise(screen, item)
    else:
        _likert(screen, item)


page()
