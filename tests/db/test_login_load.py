"""Logins under load: one waiting for a password-hash slot holds no database connection, and hashes run on
the few low-priority hash threads."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from storyloop.annotator.auth import login
from storyloop.db import session_scope
from storyloop.db import users as db_users
from storyloop.db.engine import get_engine
from storyloop.db.models import Role
from storyloop.db.users import add_user


def test_a_login_waiting_for_a_hash_slot_holds_no_database_connection(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
    pool = get_engine(migrated_url).pool
    for _ in range(db_users.MAX_CONCURRENT_HASHES):  # every slot busy, as in a flood
        db_users._hash_slots.acquire()
    results = []
    try:
        waiting = threading.Thread(target=lambda: results.append(_login(migrated_url, "ann", "password123")))
        waiting.start()
        time.sleep(0.5)  # it has read the account and now waits for a slot
        assert waiting.is_alive()
        if hasattr(pool, "checkedout"):  # SQLite's pool for a file counts too; both must be 0
            assert pool.checkedout() == 0
    finally:
        for _ in range(db_users.MAX_CONCURRENT_HASHES):
            db_users._hash_slots.release()
    waiting.join(timeout=30)
    assert results == ["ok"]


def _login(url: str, name: str, password: str) -> str:
    with session_scope(url) as s:
        return "ok" if login(s, name, password) else "refused"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are Linux's")
def test_passwords_are_checked_on_hash_threads_of_the_idle_scheduling_class():
    where = db_users._hash_threads.submit(
        lambda: (threading.current_thread().name, os.sched_getscheduler(threading.get_native_id())))
    name, policy = where.result()
    assert name.startswith("storyloop-hash") and policy == os.SCHED_IDLE
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE  # not the caller's
