"""Faults under a real Chromium: the PostgreSQL server restarts while an annotator judges.

A restart shorter than the app's wait is not seen at all: the marks made around it are stored, the submit
made while the server is down waits for it, and the judgment is stored once. An outage longer than the wait
is said plainly; the marks stay in the tab, and a submit once the server is back stores the judgment once.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, select, text

from storyloop.annotator.gold import winners_and_losers
from storyloop.annotator.work_queue import shown_order
from storyloop.db import session_scope, upgrade
from storyloop.db.engine import DB_WAIT_ENV, get_engine, normalize_url
from storyloop.db.models import Judgment
from storyloop.settings import Settings
from tests.annotator.conftest import build_round
from tests.annotator.test_browser import (
    _free_port,
    _login,
    _prompt,
    _require_chromium,
    _serve,
    _step,
    _stop,
    browser,  # noqa: F401  (browser: the fixture)
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def judging_on_pg(pg_cluster, tmp_path, monkeypatch):
    """A fresh database on the test's own server with a round of two scenarios (three candidates, k = 1),
    and a function that serves it with `storyloop annotate` waiting `wait` seconds for a restarting server."""
    _require_chromium()
    name = f"storyloop_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(pg_cluster.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = pg_cluster.url.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings.resolve(tmp_path / "data", url)
    settings.data_dir.mkdir(parents=True)
    upgrade(url)
    rf = build_round(settings, tmp_path / "src", scenarios=2, candidates=3, k=1, size=(128, 128))
    procs = []

    def serve(wait: float) -> str:
        monkeypatch.setenv(DB_WAIT_ENV, str(wait))  # the server process inherits it
        port = _free_port()
        procs.append(_serve(settings, port, tmp_path / "server.log"))
        return f"http://127.0.0.1:{port}"
    yield rf, serve
    for proc in procs:
        _stop(proc)
    get_engine(url).dispose()


def _judgments(url: str) -> list[tuple[int, set[int], set[int], list[int]]]:
    """(scenario, winners, losers, shown order) of every stored judgment."""
    with session_scope(url) as s:
        return [(j.scenario_id, *winners_and_losers(j.outcome, j.labels), j.shown_order)
                for j in s.scalars(select(Judgment).order_by(Judgment.id))]


def _new_page(browser):
    return browser.new_context(viewport={"width": 1440, "height": 900}).new_page()


def test_a_database_restart_while_judging_is_waited_out_and_the_judgment_stored_once(pg_cluster, judging_on_pg,
                                                                                     browser):
    from playwright.sync_api import expect

    rf, serve = judging_on_pg
    url = serve(wait=30)
    s0 = rf.scenarios[0]
    ann = rf.users["ann"]
    order = shown_order(rf.candidates[s0], ann, s0, 0)
    page = _new_page(browser)
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("2")  # #2 is not the character
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    page.wait_for_load_state("networkidle")

    pg_cluster.restart()  # every pooled connection of the app is now closed
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("Enter")
    _step(page, "Aesthetics")

    pg_cluster.stop()  # down while the annotator picks the best and submits ...
    back = threading.Timer(2.0, pg_cluster.start)  # ... and back two seconds later
    back.start()
    try:
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        _prompt(page, "frame 1: Mia waves")  # the submit waited for the server, then went through
    finally:
        back.join()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("The database is not answering")).to_have_count(0)
    assert _judgments(rf.settings.db_url) == [(s0, {order[0]}, {order[1]}, order)]


def test_an_outage_longer_than_the_wait_is_said_and_the_marks_are_submitted_once_it_is_over(pg_cluster,
                                                                                            judging_on_pg, browser):
    from playwright.sync_api import expect

    rf, serve = judging_on_pg
    url = serve(wait=1)
    s0 = rf.scenarios[0]
    ann = rf.users["ann"]
    order = shown_order(rf.candidates[s0], ann, s0, 0)
    page = _new_page(browser)
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("3")  # #3 is not the character
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("Enter")
    _step(page, "Aesthetics")

    pg_cluster.stop()
    page.keyboard.press("2")  # the best: kept in the tab, the lease cannot take it now
    expect(page.get_by_text("your marks are kept in this tab")).to_be_visible(timeout=30_000)
    expect(page.locator('[class*="st-key-card-2-best"]')).to_be_visible()
    page.keyboard.press("Enter")  # the submit cannot be stored: said so, nothing lost
    expect(page.get_by_text("The database is not answering").first).to_be_visible(timeout=30_000)
    try_again = page.get_by_role("button", name="Try again")
    expect(try_again).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stException")).to_have_count(0)

    pg_cluster.start()
    assert _judgments(rf.settings.db_url) == []
    try_again.click()
    expect(page.get_by_text("Not saved yet")).to_be_visible(timeout=30_000)
    _step(page, "Aesthetics")  # the same scenario, with the marks made before and during the outage
    expect(page.locator('[class*="st-key-card-2-best"]')).to_be_visible()
    expect(page.locator('[class*="st-key-card-3-fail"]')).to_be_visible()
    page.keyboard.press("Enter")
    _prompt(page, "frame 1: Mia waves")
    assert _judgments(rf.settings.db_url) == [(s0, {order[1]}, {order[2]}, order)]
