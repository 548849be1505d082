"""Browser logins: tokens in the DB, expiry, logout, and refusals that do not say which part was wrong."""

from datetime import timedelta

from sqlalchemy import select

from storyloop.annotator.auth import IDLE_TIMEOUT, MAX_AGE, login, logout, resume
from storyloop.db import session_scope
from storyloop.db.models import LoginSession, Role, utcnow
from storyloop.db.users import add_user, set_active


def test_login_gives_a_token_whose_hash_alone_is_stored(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
        token, user = login(s, "ann", "password123")
    with session_scope(migrated_url) as s:
        assert resume(s, token).username == "ann" and user.role is Role.annotator
        assert token not in s.scalar(select(LoginSession.token_sha256))


def test_wrong_password_unknown_user_and_disabled_account_are_all_just_refused(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
        add_user(s, "old", "password123", Role.annotator)
        set_active(s, "old", False)
        assert login(s, "ann", "wrong-password") is None
        assert login(s, "nobody", "password123") is None
        assert login(s, "old", "password123") is None


def test_session_expires_when_idle_and_at_its_maximum_age(migrated_url):
    now = utcnow()
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
        token, _ = login(s, "ann", "password123", now=now)
    with session_scope(migrated_url) as s:
        assert resume(s, token, now + IDLE_TIMEOUT - timedelta(minutes=1)) is not None  # activity extends it
    with session_scope(migrated_url) as s:
        assert resume(s, token, now + IDLE_TIMEOUT + timedelta(minutes=30)) is not None
        t = now + IDLE_TIMEOUT
        while t < now + MAX_AGE:  # active all day long
            assert resume(s, token, t) is not None
            t += timedelta(hours=1)
        assert resume(s, token, now + MAX_AGE + timedelta(seconds=1)) is None
    with session_scope(migrated_url) as s:
        other, _ = login(s, "ann", "password123", now=now)
    with session_scope(migrated_url) as s:
        assert resume(s, other, now + IDLE_TIMEOUT + timedelta(seconds=1)) is None


def test_logout_and_disabling_end_the_session(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator)
        a, _ = login(s, "ann", "password123")
        b, _ = login(s, "ann", "password123")
        logout(s, a)
    with session_scope(migrated_url) as s:
        assert resume(s, a) is None and resume(s, b) is not None
        set_active(s, "ann", False)
    with session_scope(migrated_url) as s:
        assert resume(s, b) is None and resume(s, None) is None and resume(s, "forged") is None
