"""Login throttling: back-off per name and per client address, the same words for unknown names, hashes bounded."""

import threading
from datetime import timedelta

import pytest

from storyloop.annotator.auth import client_address, login
from storyloop.db import session_scope
from storyloop.db import users as db_users
from storyloop.db.models import Role, utcnow
from storyloop.db.throttle import FORGET_AFTER, Throttled, delay_after
from storyloop.db.users import add_user


def attempt(url, name, password, client="10.0.0.1", now=None):
    """'ok', 'refused' or the Throttled message."""
    try:
        with session_scope(url) as s:
            return "ok" if login(s, name, password, client=client, now=now) else "refused"
    except Throttled as exc:
        return str(exc)


@pytest.fixture
def url(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
        add_user(s, "bob", "password123", Role.annotator)
    return migrated_url


def test_backoff_doubles_after_three_failures_and_caps():
    assert [delay_after(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [0, 0, 2, 4, 8, 16]
    assert delay_after(40) == timedelta(minutes=15)


def test_a_name_backs_off_known_or_not_with_the_same_words(url):
    now = utcnow()
    for name in ("ann", "nobody"):
        results = [attempt(url, name, "wrong-password", client=f"c-{name}-{i}", now=now) for i in range(4)]
        assert results[:3] == ["refused"] * 3
        assert results[3] == "Too many login attempts: try again in 2 s."
    # the right password waits too, and works once the wait is over
    assert attempt(url, "ann", "password123", client="elsewhere", now=now).startswith("Too many")
    assert attempt(url, "ann", "password123", client="elsewhere", now=now + timedelta(seconds=3)) == "ok"
    assert attempt(url, "ann", "wrong-password", client="elsewhere", now=now + timedelta(seconds=3)) == "refused"


def test_a_client_address_backs_off_across_names_and_a_good_login_does_not_lift_it(url):
    now = utcnow()
    for name in ("x1", "x2", "x3"):
        assert attempt(url, name, "guess-guess", now=now) == "refused"
    assert attempt(url, "bob", "password123", now=now).startswith("Too many")  # same address, any name
    assert attempt(url, "bob", "password123", client="10.0.0.2", now=now) == "ok"
    assert attempt(url, "x4", "guess-guess", now=now + timedelta(seconds=1)).startswith("Too many")


def test_old_failures_are_forgotten(url):
    now = utcnow()
    for _ in range(3):
        attempt(url, "ann", "wrong-password", client=None, now=now)
    later = now + FORGET_AFTER + timedelta(minutes=1)
    assert attempt(url, "ann", "wrong-password", client=None, now=later) == "refused"  # counting starts again


def test_client_address_comes_from_the_named_proxy_header(monkeypatch):
    headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    assert client_address(headers, "10.0.0.1") == "10.0.0.1"
    monkeypatch.setenv("STORYLOOP_CLIENT_HEADER", "X-Forwarded-For")
    assert client_address(headers, "10.0.0.1") == "203.0.113.9"
    assert client_address({}, "10.0.0.1") == "10.0.0.1"


def test_argon2_parameters_are_owasp_and_concurrent_hashes_are_bounded():
    digest = db_users.hash_password("a-long-password")
    assert digest.startswith("$argon2id$") and "m=19456,t=2,p=1" in digest
    db_users.hash_stats["peak"] = 0
    results = []
    threads = [threading.Thread(target=lambda: results.append(db_users.verify_password(digest, "a-long-password")))
               for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 12
    assert 1 <= db_users.hash_stats["peak"] <= db_users.MAX_CONCURRENT_HASHES
