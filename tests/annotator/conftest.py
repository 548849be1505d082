"""A small round with real images in the store, and accounts of every role."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import Role, Round, Scenario, SkipPolicy
from storyloop.db.rounds import create_round
from storyloop.db.users import add_user
from storyloop.settings import Settings
from tests.conftest import make_image

PASSWORD = "correct-horse-battery"
USERS = {"ann": Role.annotator, "bob": Role.annotator, "cat": Role.annotator, "rita": Role.researcher}


@pytest.fixture(autouse=True, scope="session")
def patient_browser_expectations():
    """A browser test waits up to 20 s for what the page should show, not Playwright's 5 s: CI runs two test
    processes on two cores, where one Streamlit rerun can take seconds. A passing test waits no longer."""
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)


@dataclass
class RoundFixture:
    settings: Settings
    round_id: int
    scenarios: list[int]  # scenario ids in story order
    candidates: dict[int, list[int]]  # scenario id -> candidate ids by index
    users: dict[str, int]


def build_round(settings: Settings, src: Path, name: str = "r1", scenarios: int = 3, candidates: int = 3,
                k: int = 2, gold_rate: float = 0.0, skip_policy: SkipPolicy = SkipPolicy.others,
                size: tuple[int, int] = (48, 32), users: dict[str, Role] | None = None,
                two_characters: bool = False) -> RoundFixture:
    """Create round `name` with scenarios s0..s{n-1} of story 'st', each image a distinct colour.
    `two_characters`: each scenario's references are Mia's one image and Tom's two."""
    src.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(scenarios):
        ref = make_image(src / f"{name}-s{s}-ref.png", (250, 200 - 10 * s, 10 + s), size)
        cands = [make_image(src / f"{name}-s{s}-c{c}.png", (20 + 26 * c, 5 * s, 100 + len(name)), size)
                 for c in range(candidates)]
        refs: list | dict = [ref.name]
        if two_characters:
            toms = [make_image(src / f"{name}-s{s}-tom{t}.png", (10, 40 * t, 240 - s), size).name for t in (1, 2)]
            refs = {"Mia": [ref.name], "Tom": toms}
        lines.append({"id": f"s{s}", "story_id": "st", "frame_index": s, "prompt": f"frame {s}: Mia waves",
                      "references": refs, "candidates": [c.name for c in cands]})
    jsonl = src / f"{name}.jsonl"
    jsonl.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, name, jsonl, judgments_per_scenario=k)
        rnd = s.scalar(select(Round).where(Round.name == name))
        rnd.gold_rate, rnd.skip_policy = gold_rate, skip_policy
        ids = {}
        for username, role in (USERS if users is None else users).items():
            ids[username] = add_user(s, username, PASSWORD, role).id
    with session_scope(settings.db_url) as s:
        rnd = s.scalar(select(Round).where(Round.name == name))
        scs = list(s.scalars(select(Scenario).where(Scenario.round_id == rnd.id).order_by(Scenario.frame_index)))
        return RoundFixture(settings, rnd.id, [sc.id for sc in scs],
                            {sc.id: [c.id for c in sc.candidates] for sc in scs}, ids)


def log_in(at, username: str, password: str = PASSWORD):
    """Log an AppTest session in as the login route does, minus the cookie (AppTest has no browser to hold
    one): a real login (password check, throttling, audit), its token handed to the session, then a run.
    A refused login leaves the session logged out. The route itself is tested in test_web.py."""
    from storyloop.annotator import ui
    from storyloop.annotator.auth import login

    with session_scope(Settings.resolve().db_url) as s:
        result = login(s, username, password)
    if result is not None:
        at.session_state[ui.TOKEN] = result[0]
    return at.run()


@pytest.fixture
def small_round(settings, tmp_path) -> RoundFixture:
    """Three scenarios of three candidates, k = 2, no gold, skips go to the others."""
    return build_round(settings, tmp_path / "src")
