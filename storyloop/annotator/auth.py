"""Browser logins: a random token in a cookie, its sha256 in `login_sessions`, idle and absolute expiry.

A Streamlit session dies with its websocket (a reload starts a new one), so the login lives in the
database and the browser keeps only the token, in an HttpOnly cookie that the login route sets
(storyloop.annotator.web). Wrong name, wrong password and disabled account all read the same to the
person at the keyboard. Each login is a new token; a role change, disabling or a new password ends the
account's logins (storyloop.db.users), so a token never outlives the rights it was issued with.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storyloop.annotator.work_queue import aware
from storyloop.db import audit
from storyloop.db.models import LoginSession, Role, User, utcnow
from storyloop.db.throttle import (
    Throttled,
    record_failure,
    record_success,
    throttle_keys,
    wait_seconds,
)
from storyloop.db.users import HASH_WAIT_S, HashBusy, authenticate, user_by_email

IDLE_TIMEOUT = timedelta(hours=2)
MAX_AGE = timedelta(hours=12)
TOUCH_EVERY = timedelta(minutes=1)  # write last_seen at most this often, not on every rerun
COOKIE = "storyloop_session"
LOGIN_FAILED = "Wrong username or password."


@dataclass(frozen=True)
class SessionUser:
    """Who is logged in; what pages and data they may see follows from `role`."""

    id: int
    username: str
    role: Role

    @property
    def is_researcher(self) -> bool:
        return self.role in (Role.researcher, Role.admin)


# Behind a reverse proxy every connection comes from the proxy: name the header that carries the client's
# address (e.g. X-Forwarded-For, set by your proxy) so that throttling keys on the person, not the proxy.
CLIENT_HEADER_ENV = "STORYLOOP_CLIENT_HEADER"


def client_address(headers, ip_address: str | None) -> str | None:
    """The address logins are throttled by: the first hop of $STORYLOOP_CLIENT_HEADER when set, else the
    connection's own address."""
    ip_address = ip_address if isinstance(ip_address, str) else None  # Streamlit's test harness gives a stand-in
    header = os.environ.get(CLIENT_HEADER_ENV)
    if header and isinstance(value := headers.get(header), str) and value.strip():
        return value.split(",")[0].strip() or ip_address
    return ip_address


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(session: Session, username: str, password: str, client: str | None = None,
          now: datetime | None = None) -> tuple[str, SessionUser] | None:
    """(token for the cookie, user) for good credentials of an active account, else None.

    Raises Throttled while the name or the client address (`client`) is backing off after failures, or
    while every password-hash slot is busy; a throttled try checks no password and costs no hash.
    """
    now = now or utcnow()
    keys = throttle_keys(username, client)
    if (wait := wait_seconds(session, keys, now)) > 0:
        raise Throttled(wait)  # not logged: a flood would fill the log; its failures were
    try:
        user = authenticate(session, username.strip(), password)
    except HashBusy:
        raise Throttled(HASH_WAIT_S) from None
    if user is None:
        record_failure(session, keys, now)
        audit.record(session, "login_failed", actor=username.strip()[:128] or "-", target=username.strip()[:320],
                     client=client)
        return None
    record_success(session, username)
    audit.record(session, "login", actor_id=user.id, actor=user.username, client=client)
    return _start(session, user, now)


def _start(session: Session, user: User, now: datetime) -> tuple[str, SessionUser]:
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(token_sha256=_digest(token), user_id=user.id, created_at=now, last_seen_at=now,
                             expires_at=now + min(IDLE_TIMEOUT, MAX_AGE)))
    session.flush()
    return token, SessionUser(user.id, user.username, Role(user.role))


# What a single sign-on for an address no active account has reads: the person can do nothing about it but
# ask, so it says whom and what to ask for (and, unlike a password refusal, may name the address: the
# provider has already proven the person owns it).
SSO_UNKNOWN = ("No storyloop account has the e-mail address {email}. Ask whoever runs storyloop to add it "
               "to your account (storyloop users set-email), or log in with your username and password.")


def login_by_email(session: Session, email: str, client: str | None = None,
                   now: datetime | None = None) -> tuple[str, SessionUser] | None:
    """(token, user) for an address an identity provider vouched for, if an active account has it, else None.
    Recorded as a login through SSO, or as a refused one."""
    now = now or utcnow()
    user = user_by_email(session, email)
    if user is None or not user.is_active:
        audit.record(session, "login_failed", actor=email.strip()[:128] or "-", target=email.strip()[:320],
                     client=client, details={"via": "sso"})
        return None
    audit.record(session, "login", actor_id=user.id, actor=user.username, client=client, details={"via": "sso"})
    return _start(session, user, now)


def resume(session: Session, token: str | None, now: datetime | None = None) -> SessionUser | None:
    """The user behind a live token (and keep it alive), or None if expired, revoked, disabled or unknown."""
    if not token:
        return None
    now = now or utcnow()
    row = session.scalar(select(LoginSession).where(LoginSession.token_sha256 == _digest(token)))
    if row is None or row.revoked_at is not None or aware(row.expires_at) <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if now - aware(row.last_seen_at) >= TOUCH_EVERY:
        row.last_seen_at = now
        row.expires_at = min(now + IDLE_TIMEOUT, aware(row.created_at) + MAX_AGE)
    return SessionUser(user.id, user.username, Role(user.role))


def logout(session: Session, token: str | None, now: datetime | None = None) -> None:
    if token:
        session.execute(update(LoginSession).where(LoginSession.token_sha256 == _digest(token))
                        .values(revoked_at=now or utcnow()))


def current_user(session: Session, user_id: int) -> SessionUser | None:
    """Re-read a logged-in user on every page run: a disabled account or a new role takes effect at once."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    return SessionUser(user.id, user.username, Role(user.role))
