"""`storyloop annotate`: start the Streamlit annotator for this data directory and database."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.common import DataDirOpt, DbOpt, console, err_console, fail, ready_settings
from storyloop.settings import DATA_DIR_ENV, DB_URL_ENV

APP_FILE = Path(__file__).resolve().parent.parent / "annotator" / "app.py"
# The st.App that serves APP_FILE behind the login routes (the HttpOnly session cookie is set there)
SERVER_FILE = APP_FILE.with_name("server.py")


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(SERVER_FILE),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            # "magic" would render any bare expression in a page (a conditional call's return value, say)
            "--runner.magicEnabled", "false",
            # an error that escapes the pages' own handler (ui.errors_by_id) shows no traceback or server path
            "--client.showErrorDetails", "none",
            "--client.toolbarMode", "minimal", "--theme.base", "light", "--theme.primaryColor", "#1d4ed8"]


def annotate(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 serves every interface.")] = "127.0.0.1",
    secure_cookie: Annotated[bool, typer.Option(
        "--secure-cookie", help="Mark the login cookie Secure on every answer. Without it, Secure is added when "
        "the request came over HTTPS (X-Forwarded-Proto from a proxy in FORWARDED_ALLOW_IPS, 127.0.0.1 by "
        "default); use it when the HTTPS proxy in front does not send that header.")] = False,
    login_workers: Annotated[int | None, typer.Option(
        min=0, help="Processes that check passwords, at the lowest priority, so that a flood of logins does not "
        "slow the pages (default 1, or $STORYLOOP_LOGIN_WORKERS; 0 checks them in the server's own threads).")] = None,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Start the annotator web app (Streamlit). Refuses a database whose schema is behind.

    Single sign-on (optional): set STORYLOOP_OIDC_METADATA_URL, _CLIENT_ID, _CLIENT_SECRET, _REDIRECT_URI and
    _COOKIE_SECRET, or an [auth] section in .streamlit/secrets.toml; see docs/how-it-works.md (Accounts)."""
    from storyloop.annotator import web

    s = ready_settings(data_dir, db)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        err_console.print(f"[yellow]note:[/] listening on {host}: serve it behind HTTPS, logins travel in the clear.")
    if not APP_FILE.exists() or not SERVER_FILE.exists():
        raise fail(f"the annotator app is missing from this installation ({APP_FILE.parent})")
    env = {**os.environ, DATA_DIR_ENV: str(s.data_dir.resolve()), DB_URL_ENV: s.db_url}
    if secure_cookie:
        env[web.SECURE_ENV] = "1"
    if login_workers is not None:
        env[web.WORKERS_ENV] = str(login_workers)
    try:  # the server reads the same settings: a mistake is said here, not as a traceback from inside it
        config = web.load_config(env)
    except ValueError as exc:
        raise fail(str(exc)) from None
    sign_on = f", single sign-on through {config.sso.provider!r}" if config.sso is not None else ""
    console.print(f"Annotator for {s.data_dir} on http://{host}:{port}{sign_on}  (Ctrl+C stops it)")
    sys.stdout.flush()
    # Become the Streamlit server: signals (Ctrl+C, a supervisor's SIGTERM) reach it directly.
    os.execve(sys.executable, streamlit_command(host, port), env)
