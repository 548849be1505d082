"""The annotator's server: `storyloop annotate` runs `streamlit run` on this file.

Streamlit finds the `st.App` below and serves it with uvicorn: the app script (app.py, one run per
browser session) behind the login routes and the gate of storyloop.annotator.web, which set and clear
the HttpOnly session cookie; passwords are checked on a few worker processes started here. With single
sign-on configured by STORYLOOP_OIDC_* variables, their values become Streamlit's [auth] secrets here, so
its OIDC routes (what `st.login` uses) find them.
"""

from pathlib import Path

import streamlit as st

from storyloop.annotator import web

_config = web.load_config()
_login_workers = web.LoginWorkers(_config.login_workers)
_login_workers.start()  # the password-checking processes, ready before the first login

app = st.App(
    Path(__file__).with_name("app.py"),
    routes=web.routes(_config, _login_workers),
    middleware=web.middleware(),
    secrets={"auth": _config.sso.streamlit_auth} if _config.sso is not None and _config.sso.streamlit_auth else None,
)
