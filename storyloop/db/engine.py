"""Opening the database: one engine per URL, one way to open a session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "storyloop_read_only"  # execution option of the engine behind read_scope


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


@lru_cache(maxsize=None)
def get_engine(url: str) -> Engine:
    """The process-wide engine for `url` (thread-safe; Streamlit sessions share it)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
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
