"""Opening the database: one engine per URL, one way to open a session.

A PostgreSQL server that restarts under a running app (an upgrade, a failover) is waited out: a pooled
connection is pinged before use, and a new connection to a server that was reached before is retried
for up to `db_wait_seconds()` while the server refuses or is starting up. A transaction the restart cut
off fails; `retrying` runs work that is safe to repeat once more on a fresh connection.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "storyloop_read_only"  # execution option of the engine behind read_scope
DB_WAIT_ENV = "STORYLOOP_DB_WAIT_S"
DB_WAIT_S = 10.0  # a service restart takes about a second; an upgrade of the server a few
_RETRY_EVERY_S = 0.2
T = TypeVar("T")
log = logging.getLogger("storyloop.db")


def db_wait_seconds() -> float:
    """How long a request waits for a PostgreSQL server it reached before to take connections again:
    $STORYLOOP_DB_WAIT_S, else DB_WAIT_S."""
    value = os.environ.get(DB_WAIT_ENV)
    try:
        return max(0.0, float(value)) if value else DB_WAIT_S
    except ValueError:
        raise ValueError(f"{DB_WAIT_ENV}={value!r}: give the seconds to wait as a number") from None


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here; everything else passes through unchanged."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies. A deferred
        # transaction that later upgrades to a writer fails at once with "database is locked".
        # Read-only sessions (read_scope) begin deferred: under WAL they never wait for a writer,
        # so a training rank reading its round is not blocked by another rank's write.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _server_coming_back(exc: Exception) -> bool:
    """A refused or dropped connection (no SQLSTATE: nothing answered) or a server starting up or shutting
    down (57P..): worth waiting for. Wrong credentials or a missing database are not."""
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("57P", "08"))


def _wait_out_restarts(engine: Engine) -> None:
    reached = False  # a server never reached is a wrong URL or a stopped service: fail at once

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        nonlocal reached
        deadline = time.monotonic() + (db_wait_seconds() if reached else 0.0)
        warned = False
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if not _server_coming_back(exc) or time.monotonic() >= deadline:
                    raise
                if not warned:
                    log.warning("database unreachable (%s): waiting up to %.0f s for it to come back",
                                str(exc).splitlines()[0], db_wait_seconds())
                    warned = True
                time.sleep(_RETRY_EVERY_S)
                continue
            reached = True
            return conn


@lru_cache(maxsize=None)
def get_engine(url: str) -> Engine:
    """The process-wide engine for `url` (thread-safe; Streamlit sessions share it)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
    else:
        # pre-ping: a pooled connection that a server restart closed is replaced before use, not failed on
        engine = create_engine(url, pool_pre_ping=True)
        _wait_out_restarts(engine)
    return engine


@lru_cache(maxsize=None)
def _sessionmaker(url: str, read_only: bool = False) -> sessionmaker[Session]:
    engine = get_engine(url)
    if read_only:
        engine = engine.execution_options(**{READ_ONLY: True})
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    session = _sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def retrying(url: str, work: Callable[[Session], T], attempts: int = 3) -> T:
    """`work(session)` in a session_scope; if the connection dropped under it (a server restart cut the
    transaction off, or its commit), again in a new one, up to `attempts` times in all.

    Only for work that is safe to repeat: a commit cut off may have happened, so `work` must come out the
    same run twice (an idempotency key, an UPDATE to a value). Errors that are not a lost connection are
    raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(url) as session:
                return work(session)
        except DBAPIError as exc:
            if not exc.connection_invalidated or attempt == attempts:
                raise
            log.warning("database connection lost (%s): trying again (%d of %d)",
                        str(exc.orig).splitlines()[0] if exc.orig else exc, attempt + 1, attempts)
    raise AssertionError("unreachable")


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session for reading only: never takes SQLite's write lock, and a write in it is an error.

    For long-running readers (trainers, several processes of one run) that must neither wait for
    nor block the annotators' writes. Its transaction ends with the session; objects read in it
    stay usable (detached, not expired).
    """
    session = _sessionmaker(url, read_only=True)()

    @event.listens_for(session, "before_flush")
    def _refuse(*_):
        raise RuntimeError("read_scope is for reading: open a session_scope to write")

    try:
        yield session
    finally:
        session.close()  # ends the transaction without expiring what was read
