"""Streamlit plumbing shared by the pages: settings, the DB session, the logged-in user, styling."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import TypeVar

import streamlit as st
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from storyloop.annotator.auth import SessionUser
from storyloop.db import SchemaError, require_current_schema, session_scope
from storyloop.db.engine import retrying
from storyloop.settings import Settings

T = TypeVar("T")

# Session-state keys, named in one place so the pages agree on them.
TOKEN = "auth_token"  # the login token of this browser session
USER = "user"  # SessionUser, re-checked against the DB on every run
LOGGED_OUT = "logged_out"  # set by logout: ignore the (stale) cookie this session connected with
SESSION_ENDED = "session_ended"  # the login this session ran on has ended (idle, revoked, disabled)
TASK = "task"  # the annotator's current Task (with its draft), or None
LAST_SUBMITTED = "last_submitted"  # scenario id of the annotator's last submit, for undo
SET_ASIDE = "set_aside"  # the unfinished Task an edit interrupted: it comes back, marks and all, after the edit
KEYS_SEEN = "keys_seen"  # seq of the newest judging key press dealt with (storyloop.annotator.keys)
KEYS_SESSION = "keys_session"  # random id of this session, stamped on its judging key presses
FLASH = "flash"  # (kind, message) shown once at the top of the next run
JUDGE_WARNING = "judge-warning"  # what the last press on the judging page could not do, shown until the next one
ROUND = "research_round"  # round id the research pages look at
STUDY = "study"  # id of the study the annotator answers (storyloop.annotator.study_view.pick_study)
STUDY_SCREEN = "study_screen"  # the annotator's current StudyScreen (storyloop.annotator.study_keys), or None
STUDY_ASIDE = "study_aside"  # the unfinished StudyScreen an edit interrupted (Likert ratings kept)
STUDY_ANSWERED = "study_answered"  # ids of the studies this session answered in: U reopens the last answer
STUDY_KEYS_SEEN = "study_keys_seen"  # seq of the newest study key press dealt with
RESULTS_STUDY = "results_study"  # study name the Results page looks at

# Not "pages": Streamlit treats a pages/ folder beside the main script as old-style multipage pages and
# runs such a file alone when a new session asks for it (a typed URL, a tab reconnecting after a server
# restart), skipping app.py's login and roles.
PAGES_DIR = Path(__file__).parent / "app_pages"


@st.cache_resource(show_spinner=False)
def _checked_settings(data_dir: str, db_url: str) -> Settings:
    # Raises (and so is not cached) while the schema is behind; checked once per process otherwise.
    require_current_schema(db_url)
    return Settings(Path(data_dir), db_url)


def app_settings() -> Settings:
    """Where the data is (from the environment `storyloop annotate` sets); stops the page on a bad schema."""
    s = Settings.resolve()
    try:
        return _checked_settings(str(s.data_dir), s.db_url)
    except SchemaError as exc:
        st.error(f"The annotator cannot start: {exc}")
        st.stop()


@contextmanager
def db() -> Iterator[Session]:
    with session_scope(app_settings().db_url) as session:
        yield session


def write_again_if_cut_off(work: Callable[[Session], T]) -> T:
    """`work` in a session, done again on a new connection if a database restart cut it off: for writes that
    come out the same when repeated (a keyed submit, the draft on the lease)."""
    return retrying(app_settings().db_url, work)


# What a person sees while the database does not answer (PostgreSQL restarting for longer than the engine waits).
DB_UNREACHABLE = ("The database is not answering (it may be restarting). Nothing you submitted is lost, and the "
                  "marks on this page are kept in this tab.")


def user() -> SessionUser:
    return st.session_state[USER]


def open_edit(edit) -> None:
    """Show the edit Task `edit` now; an unfinished task on screen is set aside until the edit is done."""
    current = st.session_state.get(TASK)
    if current is not None and not current.is_edit:
        st.session_state[SET_ASIDE] = current
    st.session_state[TASK] = edit


def flash(kind: str, message: str) -> None:
    st.session_state[FLASH] = (kind, message)


log = logging.getLogger("storyloop.annotator")


@contextmanager
def errors_by_id() -> Iterator[None]:
    """An unexpected error on a page: the person sees a short message with an id, never a traceback or a
    server path; the traceback goes to the server log under that id. Streamlit's rerun and stop are not
    Exceptions and pass through."""
    try:
        yield
    except OperationalError:
        # The session state (the task and its marks) lives on in this tab: a rerun picks up where it was.
        error_id = secrets.token_hex(4)
        log.warning("error %s (user %s): database unreachable", error_id,
                    getattr(st.session_state.get(USER), "username", "-"), exc_info=True)
        st.warning(f"{DB_UNREACHABLE} Try again in a moment (error {error_id}).", icon=":material/cloud_off:")
        st.button("Try again", icon=":material/refresh:", key="db-try-again")
    except Exception:
        error_id = secrets.token_hex(4)
        log.exception("error %s (user %s)", error_id, getattr(st.session_state.get(USER), "username", "-"))
        st.error(f"Something went wrong on our side (error {error_id}). What you saved is kept: reload the page "
                 "to go on, and give this id to whoever runs storyloop if it happens again.",
                 icon=":material/error:")


@st.cache_resource
def favicon():
    """The tab's icon, drawn here and served by this server: a material-icon favicon is fetched from
    fonts.gstatic.com, which an offline server cannot reach (and which learns who uses it)."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle([2, 2, 61, 61], radius=14, fill=(29, 78, 216, 255))
    for x in (12, 27, 42):  # three story frames
        draw.rounded_rectangle([x, 20, x + 10, 44], radius=2, fill=(255, 255, 255, 255))
    return icon


def show_flash() -> None:
    if (item := st.session_state.pop(FLASH, None)) is not None:
        kind, message = item
        {"success": st.success, "warning": st.warning, "error": st.error, "info": st.info}[kind](message)


# Loads data.url in the whole tab. The session cookie is HttpOnly and only the login routes
# (storyloop.annotator.web) set or clear it, in answers to real page loads: the app hands the browser to
# them. Streamlit calls the default export again on every data change.
_GOTO_JS = """
export default function (component) {
  if (component.data.url) window.location.replace(component.data.url);
}
"""
_navigator = st.components.v2.component("storyloop_goto", js=_GOTO_JS)


def go_to(url: str | None) -> None:
    """Send the tab to `url`, a path of this server (a full page load, not a Streamlit page switch); None
    mounts the component and goes nowhere."""
    _navigator(key="goto", data={"url": url})


CSS = """
<style>
.block-container { padding-top: 3.9rem; padding-bottom: 1rem; max-width: 100%; } /* below the 3.75rem header */
[data-testid="stSidebarContent"] { padding-top: 0.5rem; }
.sl-prompt { font-size: 1.35rem; font-weight: 600; line-height: 1.35; margin: 0 0 .35rem 0; }
.sl-meta { color: #6b7280; font-size: .85rem; margin-bottom: .2rem; }
.sl-missing { height: 220px; display: flex; flex-direction: column; align-items: center; justify-content: center;
  background: repeating-linear-gradient(45deg, #f3f4f6, #f3f4f6 10px, #e5e7eb 10px, #e5e7eb 20px);
  border-radius: .4rem; color: #991b1b; font-weight: 600; text-align: center; padding: .5rem; }
.sl-missing code { color: #374151; font-weight: 400; font-size: .75rem; }
/* candidate cards: the state in the key becomes a CSS class (st-key-card-<pos>-<state>) */
div[class*="st-key-card-"] { border-width: 3px !important; border-radius: .6rem; padding: .5rem !important;
  gap: .5rem !important; }
/* The judging grid (st-key-cards-<rows>) fits the window: a laptop screen shows every row of candidates,
   the images shrinking rather than the last row falling below the fold (the zoom shows every pixel). */
.st-key-cards-1 div[class*="st-key-card-"] [data-testid="stImage"] img, .st-key-refs-1 [data-testid="stImage"] img {
  max-height: calc(100vh - 370px); }
.st-key-cards-2 div[class*="st-key-card-"] [data-testid="stImage"] img, .st-key-refs-2 [data-testid="stImage"] img {
  max-height: calc((100vh - 440px) / 2); }
.st-key-cards-3 div[class*="st-key-card-"] [data-testid="stImage"] img, .st-key-refs-3 [data-testid="stImage"] img {
  max-height: calc((100vh - 510px) / 3); }
div[class*="st-key-refs-"] [data-testid="stImage"] img { object-fit: contain; }
div[class*="st-key-cards-"] [data-testid="stFullScreenFrame"] > div, div[class*="st-key-cards-"] [data-testid="stImage"],
div[class*="st-key-cards-"] [data-testid="stImageContainer"] { width: 100% !important; }
div[class*="st-key-cards-"] [data-testid="stImage"] img { width: auto !important; display: block; margin: 0 auto; }
div[class*="st-key-card-"][class*="-pass"] { border-color: #16a34a !important; }
div[class*="st-key-card-"][class*="-fail"] { border-color: #dc2626 !important; background: #fef2f2; }
div[class*="st-key-card-"][class*="-fail"] img { opacity: .45; filter: grayscale(60%); }
div[class*="st-key-card-"][class*="-out"] { border-color: #e5e7eb !important; }
div[class*="st-key-card-"][class*="-out"] img { opacity: .3; filter: grayscale(90%); }
div[class*="st-key-card-"][class*="-best"] { border-color: #d97706 !important; background: #fffbeb; }
div[class*="st-key-card-"][class*="-ranked"] { border-color: #2563eb !important; }
div[class*="st-key-card-"][class*="-open"] { border-color: #9ca3af !important; }
.sl-steps { display: flex; gap: .4rem; margin: .2rem 0 .3rem 0; flex-wrap: wrap; }
.sl-step { padding: .15rem .6rem; border-radius: 999px; background: #f3f4f6; color: #6b7280; font-size: .85rem; }
.sl-step.on { background: #1d4ed8; color: white; font-weight: 600; }
.sl-step.done { background: #dbeafe; color: #1e3a8a; }
.sl-keys td { padding: 1px 6px; font-size: .8rem; } .sl-keys kbd { font-size: .75rem; }
[role="dialog"] [data-testid="stImage"] img { max-height: 72vh; width: auto !important; margin: 0 auto; }
.st-key-judging-keys, .st-key-study-keys { display: none; } /* the key listeners (annotator.keys) */
[data-testid="stElementContainer"]:has(.sl-shown) { display: none; } /* a study item's on-screen marker */
/* Studies: both pairwise frames at one size (the column's width), as large as the window allows; a reference
   is never shown larger (a narrower column, the same height limit). */
.st-key-study-pair [data-testid="stImage"] img, .st-key-study-refs [data-testid="stImage"] img {
  max-height: calc(100vh - 330px); object-fit: contain; }
.st-key-study-story [data-testid="stImage"] img { max-height: calc(100vh - 480px); object-fit: contain; }
.sl-character { font-weight: 600; color: #1e3a8a; margin: .4rem 0 .1rem 0; }
.sl-side { text-align: center; font-weight: 600; font-size: 1.05rem; color: #374151; }
.st-key-goto { display: none; }
</style>
"""


def style() -> None:
    st.markdown(CSS, unsafe_allow_html=True)


def pick_round() -> int | None:
    """The round the research pages look at, chosen at the top of the page (newest first); None if none exist."""
    from storyloop.annotator.rounds import list_rounds

    with db() as s:
        rounds = list_rounds(s)
    if not rounds:
        st.info("No rounds yet: create one with `storyloop round create`.")
        return None
    names = {r.id: r.name for r in rounds}
    current = st.session_state.get(ROUND)
    chosen = st.selectbox("Round", list(names), format_func=names.get, key="round-picker", width=320,
                          index=list(names).index(current) if current in names else 0)
    st.session_state[ROUND] = chosen
    return chosen


def show_references(view) -> None:
    """A scenario's references, grouped under each character's name (a flat list: one group, no name).

    Numbered within the group, so "Tom 2" is the second image of Tom, whatever comes before it."""
    st.markdown("**References**")
    for character, images in view.reference_groups:
        if character is not None:
            st.markdown(f'<div class="sl-character">{escape(character)}</div>', unsafe_allow_html=True)
        for i, ref in enumerate(images, start=1):
            if ref.missing:
                st.markdown('<div class="sl-missing">Reference image missing</div>', unsafe_allow_html=True)
                continue
            label = character if character is not None else "reference"
            st.image(ref.thumb, width="stretch", caption=f"{label} {i}" if len(images) > 1 else None)
