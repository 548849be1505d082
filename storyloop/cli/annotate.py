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


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
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
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Start the annotator web app (Streamlit). Refuses a database whose schema is behind."""
    s = ready_settings(data_dir, db)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        err_console.print(f"[yellow]note:[/] listening on {host}: serve it behind HTTPS, logins travel in the clear.")
    if not APP_FILE.exists():
        raise fail(f"the annotator app is missing from this installation ({APP_FILE})")
    console.print(f"Annotator for {s.data_dir} on http://{host}:{port}  (Ctrl+C stops it)")
    sys.stdout.flush()
    env = {**os.environ, DATA_DIR_ENV: str(s.data_dir.resolve()), DB_URL_ENV: s.db_url}
    # Become the Streamlit server: signals (Ctrl+C, a supervisor's SIGTERM) reach it directly.
    os.execve(sys.executable, streamlit_command(host, port), env)
