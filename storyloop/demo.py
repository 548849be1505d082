"""The demo on the embedded default: SQLite, the toy world's models, and the annotator.

`storyloop demo` sets up a fresh data directory with an admin and an annotator, imports a round of
toy scenarios (held-out characters), generates their candidates with the toy Stage-1 model (GSA,
cached references) and starts the annotator. `storyloop demo --loop` runs the whole loop headless.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from storyloop.db import session_scope, upgrade
from storyloop.db.models import Role
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
    candidates: int


def fresh_demo_dir(data_dir: Path) -> None:
    data_dir = Path(data_dir)
    if data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise DemoError(f"{data_dir} exists and is not a demo folder: choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("created by `storyloop demo`; deleted and recreated on each run\n")


def setup_demo(data_dir: Path, stories: int = 6, candidates: int = 4, steps: int = 20,
               progress: bool = True) -> DemoSetup:
    """Wipe and recreate `data_dir`; accounts; a toy round with Stage-1 candidates."""
    from storyloop.generation.run import generate_round
    from storyloop.toy.loop import LoopConfig, generate_config, new_round
    from storyloop.toy.scenarios import make_scenarios
    from storyloop.toy.world import split_characters

    fresh_demo_dir(data_dir)
    settings = Settings.resolve(data_dir=data_dir, db_url=None)
    upgrade(settings.db_url)
    credentials = {"admin": secrets.token_urlsafe(9), "annotator": secrets.token_urlsafe(9)}
    with session_scope(settings.db_url) as session:
        add_user(session, "admin", credentials["admin"], Role.admin)
        add_user(session, "annotator", credentials["annotator"], Role.annotator)
    _, held_out = split_characters()
    scenarios = make_scenarios(held_out, stories, seed=7, prefix="demo")
    new_round(settings, "demo-1", scenarios, data_dir / "inputs" / "demo-1")
    summary = generate_round(settings, "demo-1", generate_config(LoopConfig(candidates=candidates), steps),
                             progress=progress)
    return DemoSetup(settings, credentials, "demo-1", summary.generated)


def run_demo_loop(data_dir: Path, progress: bool = True, log=print) -> dict:
    from storyloop.toy.loop import run_loop

    fresh_demo_dir(data_dir)
    return run_loop(Path(data_dir), log=log, progress=progress)
