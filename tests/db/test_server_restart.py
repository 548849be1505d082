"""A PostgreSQL server restarting under the app: waited out, a cut-off write redone once, a wrong URL not waited for."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from storyloop.db import session_scope, upgrade
from storyloop.db.engine import DB_WAIT_ENV, get_engine, retrying
from storyloop.db.models import Judgment
from storyloop.settings import Settings
from tests.annotator.conftest import build_round

pytestmark = pytest.mark.postgres


def _one(url: str) -> int:
    with session_scope(url) as s:
        return s.execute(text("SELECT 1")).scalar_one()


def test_a_session_after_a_restart_works_and_one_during_it_waits(pg_cluster, monkeypatch):
    monkeypatch.setenv(DB_WAIT_ENV, "20")
    url = pg_cluster.url
    assert _one(url) == 1  # the pool now holds a connection the restart will close
    pg_cluster.restart()
    assert _one(url) == 1  # pinged, found closed, replaced: no error
    pg_cluster.stop()
    back = threading.Timer(1.5, pg_cluster.start)
    back.start()
    began = time.monotonic()
    try:
        assert _one(url) == 1  # refused at first, then the server is back
    finally:
        back.join()
    assert time.monotonic() - began >= 1.0


def test_a_server_down_longer_than_the_wait_is_an_error_not_a_hang(pg_cluster, monkeypatch):
    monkeypatch.setenv(DB_WAIT_ENV, "1")
    assert _one(pg_cluster.url) == 1
    pg_cluster.stop()
    began = time.monotonic()
    with pytest.raises(OperationalError):
        _one(pg_cluster.url)
    assert 1.0 <= time.monotonic() - began < 10


def test_a_server_never_reached_is_not_waited_for(pg_cluster, monkeypatch):
    monkeypatch.setenv(DB_WAIT_ENV, "30")
    wrong = pg_cluster.url.rsplit("/", 1)[0] + "/no_such_database"
    began = time.monotonic()
    with pytest.raises(OperationalError):
        _one(wrong)
    pg_cluster.stop()
    with pytest.raises(OperationalError):  # never connected to before by this process: a wrong URL, not a restart
        _one(pg_cluster.url.replace("127.0.0.1", "localhost"))
    assert time.monotonic() - began < 5


def test_a_write_cut_off_by_a_restart_is_done_again_once(pg_cluster, tmp_path):
    """The restart lands inside the transaction: retrying rolls it back and runs the work on a new connection.
    The submit is keyed, so the judgment is stored once whatever attempt's commit got through."""
    from storyloop.annotator.work_queue import next_task
    from storyloop.annotator.submit import submit_task

    url = pg_cluster.url
    settings = Settings.resolve(tmp_path / "data", url)
    upgrade(url)
    rf = build_round(settings, tmp_path / "src", scenarios=1, candidates=3, k=1)
    with session_scope(url) as s:
        task = next_task(s, rf.users["ann"])
    task.draft.toggle(1), task.draft.advance(), task.draft.advance(), task.draft.toggle(2)
    attempts = []

    def work(session):
        attempts.append(1)
        done = submit_task(session, task)
        if len(attempts) == 1:
            pg_cluster.restart()  # the connection under this transaction is gone: its commit fails
        return done

    done = retrying(url, work)
    assert len(attempts) == 2 and done.created
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Judgment)) == 1
    # the same submit again (a tab that never heard back) is the same judgment, not a second one
    assert not retrying(url, lambda s: submit_task(s, task)).created
    get_engine(url).dispose()


def test_errors_that_are_not_a_lost_connection_are_not_retried(pg_cluster):
    attempts = []

    def work(session):
        attempts.append(1)
        session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception, match="no_such_table"):
        retrying(pg_cluster.url, work)
    assert len(attempts) == 1
