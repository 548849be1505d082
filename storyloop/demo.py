"""The demo: a fresh data directory with accounts and a round, on the embedded SQLite default."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from storyloop.db import session_scope, upgrade
from storyloop.db.models import Role
from storyloop.db.rounds import create_round
from storyloop.db.users import add_user
from storyloop.settings import Settings

MARKER = ".storyloop-demo"  # only a folder carrying this marker is ever wiped by the demo


class DemoError(RuntimeError):
    pass


@dataclass
class DemoSetup:
    settings: Settings
    credentials: dict[str, str]  # username -> password
    round_name: str


def fresh_demo_dir(data_dir: Path) -> None:
    data_dir = Path(data_dir)
    if data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise DemoError(f"{data_dir} exists and is not a demo folder: choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("created by `storyloop demo`; deleted and recreated on each run\n")


def setup_demo(data_dir: Path) -> DemoSetup:
    """Wipe and recreate `data_dir`, migrate, add an admin and an annotator, create an empty round."""
    fresh_demo_dir(data_dir)
    settings = Settings.resolve(data_dir=data_dir, db_url=None)
    upgrade(settings.db_url)
    credentials = {"admin": secrets.token_urlsafe(9), "annotator": secrets.token_urlsafe(9)}
    with session_scope(settings.db_url) as session:
        add_user(session, "admin", credentials["admin"], Role.admin)
        add_user(session, "annotator", credentials["annotator"], Role.annotator)
        create_round(session, settings.store_dir, "demo-1")
    return DemoSetup(settings, credentials, "demo-1")
