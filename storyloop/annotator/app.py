"""The annotator app: `storyloop annotate` runs this file with Streamlit.

It logs the person in, then builds the navigation for their role: annotators get the annotate page,
their own history and the studies to answer; researchers and admins also get study results, rounds,
progress, agreement, gallery and export. Each page is a file in app_pages/ and holds no database logic of its own.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.exc import OperationalError

from storyloop.annotator import ui
from storyloop.annotator.auth import (
    COOKIE,
    LOGIN_FAILED,
    client_address,
    current_user,
    login,
    logout,
    resume,
)
from storyloop.db.models import Role
from storyloop.db.throttle import Throttled

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
        st.session_state[ui.COOKIE_ACTION] = ("clear",)
        ui.flash("info", "Your session has ended; please log in again.")
        return False
    if (old := st.session_state.get(ui.USER)) is not None and old.id != who.id:
        st.session_state.pop(ui.TASK, None)  # another account in this browser: nothing carries over
    st.session_state[ui.TOKEN], st.session_state[ui.USER] = token, who
    return True


def _on_login() -> None:
    username = st.session_state.get("login_username", "")
    password = st.session_state.get("login_password", "")
    try:
        with ui.db() as s:
            result = login(s, username, password,
                           client=client_address(st.context.headers, st.context.ip_address))
    except Throttled as exc:  # the same words whether the name exists or not
        st.session_state["login_password"] = ""
        ui.flash("error", str(exc))
        return
    except OperationalError:
        ui.flash("error", "The database is not answering (it may be restarting): try again in a moment.")
        return
    st.session_state["login_password"] = ""
    if result is None:
        ui.flash("error", LOGIN_FAILED)  # never which of the two was wrong
        return
    token, who = result
    st.session_state[ui.TOKEN], st.session_state[ui.USER] = token, who
    st.session_state[ui.COOKIE_ACTION] = ("set", token)
    st.session_state.pop(ui.TASK, None)
    st.session_state.pop(ui.LOGGED_OUT, None)


def _on_logout() -> None:
    with ui.db() as s:
        logout(s, st.session_state.get(ui.TOKEN))
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[ui.LOGGED_OUT] = True
    st.session_state[ui.COOKIE_ACTION] = ("clear",)
    ui.flash("info", "Logged out.")


def _logout_page() -> None:
    _on_logout()
    st.rerun()


def login_page() -> None:
    _, middle, _ = st.columns([1, 1.2, 1])
    with middle:
        st.title("storyloop")
        st.caption("Judge generated story frames: consistency, then anatomy, then aesthetics.")
        ui.show_flash()
        with st.form("login", border=True):
            st.text_input("Username", key="login_username", autocomplete="username")
            st.text_input("Password", key="login_password", type="password", autocomplete="current-password")
            st.form_submit_button("Log in", type="primary", on_click=_on_login, width="stretch")


def main() -> None:
    ui.app_settings()
    ui.style()
    logged_in = None
    with ui.errors_by_id():
        logged_in = _authenticate()
    if logged_in is None:
        return  # the database did not answer; errors_by_id said so
    ui.write_cookie()  # before the navigation: once the page shows the login worked, its cookie is in the browser
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
