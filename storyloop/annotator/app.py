"""The annotator app: `storyloop annotate` serves this script (storyloop.annotator.server) behind the
login routes of storyloop.annotator.web, which set the session cookie.

It checks the person's login, then builds the navigation for their role: annotators get the annotate page,
their own history and the studies to answer; researchers and admins also get study results, rounds,
progress, agreement, gallery and export. Each page is a file in app_pages/ and holds no database logic of its own.
"""

from __future__ import annotations

import streamlit as st

from storyloop.annotator import ui
from storyloop.annotator.auth import COOKIE, current_user, logout, resume
from storyloop.db.models import Role

st.set_page_config(page_title="storyloop annotator", page_icon=ui.favicon(), layout="wide",
                   initial_sidebar_state="collapsed")


def _authenticate() -> bool:
    """Put the logged-in user in session state; False if nobody is (or the login expired)."""
    token = st.session_state.get(ui.TOKEN)
    if not token and not st.session_state.get(ui.LOGGED_OUT):  # the browser's cookie, read at connect time
        cookie = st.context.cookies.get(COOKIE)
        token = cookie if isinstance(cookie, str) else None
    if not token:
        return False
    with ui.db() as s:
        who = resume(s, token)
        if who is not None:
            who = current_user(s, who.id)
    if who is None:
        st.session_state.pop(ui.TOKEN, None)
        st.session_state.pop(ui.USER, None)
        st.session_state[ui.SESSION_ENDED] = True
        ui.flash("info", "Your session has ended; please log in again.")
        return False
    if (old := st.session_state.get(ui.USER)) is not None and old.id != who.id:
        st.session_state.pop(ui.TASK, None)  # another account in this browser: nothing carries over
    st.session_state[ui.TOKEN], st.session_state[ui.USER] = token, who
    return True


def _logout_page() -> None:
    with ui.db() as s:
        logout(s, st.session_state.get(ui.TOKEN))
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[ui.LOGGED_OUT] = True
    st.rerun()


def _login_target() -> str:
    """Where a tab without a login goes: the form, or after a logout /logout, which clears the cookie."""
    if st.session_state.get(ui.LOGGED_OUT):
        return "/logout"
    return "/login?m=ended" if st.session_state.get(ui.SESSION_ENDED) else "/login"


def login_page() -> None:
    """Nobody is logged in: main() sends the tab to the login form (storyloop.annotator.web), which sets the
    cookie; the link is for a tab whose script has not loaded."""
    _, middle, _ = st.columns([1, 1.2, 1])
    with middle:
        st.title("storyloop")
        st.caption("Judge generated story frames: consistency, then anatomy, then aesthetics.")
        ui.show_flash()
        st.markdown(f"[Log in]({_login_target()})")


def main() -> None:
    ui.app_settings()
    ui.style()
    logged_in = None
    with ui.errors_by_id():
        logged_in = _authenticate()
    if logged_in is None:
        return  # the database did not answer; errors_by_id said so
    # Every run mounts the navigator, with somewhere to go or not, first thing: Streamlit fetches its
    # components' code when the first one shows, and fetched here it is ready before the judging page's key
    # listener mounts (a key pressed in the first second of a fresh tab went nowhere).
    ui.go_to(None if logged_in else _login_target())
    if not logged_in:
        with ui.errors_by_id():
            st.navigation([st.Page(login_page, title="Log in", url_path="login")], position="hidden").run()
        return
    who = ui.user()
    # Opening Annotate leases a scenario, so researchers land on Progress: a login to look at the numbers
    # must not hold back an annotator's next item for 20 minutes.
    pages = {"Annotate": [
        st.Page(ui.PAGES_DIR / "annotate.py", title="Annotate", icon=":material/rate_review:",
                default=not who.is_researcher),
        st.Page(ui.PAGES_DIR / "history.py", title="My judgments", icon=":material/history:"),
    ]}
    pages["Studies"] = [st.Page(ui.PAGES_DIR / "study.py", title="Answer a study", icon=":material/compare:")]
    if who.is_researcher:
        pages["Studies"].append(st.Page(ui.PAGES_DIR / "study_results.py", title="Study results",
                                        icon=":material/leaderboard:"))
        pages["Research"] = [
            st.Page(ui.PAGES_DIR / "rounds.py", title="Rounds", icon=":material/layers:"),
            st.Page(ui.PAGES_DIR / "progress.py", title="Progress", icon=":material/monitoring:", default=True),
            st.Page(ui.PAGES_DIR / "agreement.py", title="Agreement", icon=":material/handshake:"),
            st.Page(ui.PAGES_DIR / "gallery.py", title="Gallery", icon=":material/photo_library:"),
            st.Page(ui.PAGES_DIR / "export.py", title="Export", icon=":material/download:"),
            st.Page(ui.PAGES_DIR / "runs.py", title="Runs", icon=":material/show_chart:"),
        ]
    if who.role is Role.admin:
        pages["Admin"] = [st.Page(ui.PAGES_DIR / "audit.py", title="Audit log", icon=":material/policy:")]
    pages[who.username] = [st.Page(_logout_page, title=f"Log out {who.username}", icon=":material/logout:",
                                   url_path="logout")]
    with ui.errors_by_id():
        st.navigation(pages, position="top").run()


# Streamlit runs this file as __main__. The guard keeps multiprocessing's spawn children (which
# re-run the parent's __main__ under another name) from starting the app when it was run in-process,
# as AppTest and the benchmark do.
if __name__ == "__main__":
    main()
