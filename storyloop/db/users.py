"""Accounts: argon2id password hashes, roles, disabling."""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storyloop.db import audit
from storyloop.db.models import LoginSession, Role, User, utcnow

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): a hash's memory is what a burst of
# logins multiplies. The parameters travel inside each hash; an older hash is redone at its next login.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
# An address as identity providers give it: one @, no spaces, a dot in the domain. Not RFC 5322: the check is
# there to catch a typo (a missing @, a pasted name), the provider is what vouches for the address.
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
# At most this many password hashes at once in a process (a flood of logins queues, memory stays bounded);
# a login that cannot get a slot within HASH_WAIT_S is refused as busy.
MAX_CONCURRENT_HASHES = 4
HASH_WAIT_S = 5.0
HASH_NICE = 19  # the hashing threads' niceness (Linux): a login flood takes the CPU the annotators' pages leave
_hash_slots = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


def _lower_priority() -> None:
    # Linux schedules threads on their own, so this thread alone yields the CPU to the page runs: argon2
    # releases the GIL, and four hashes on a small server's cores otherwise slowed every page several times.
    # The idle class: it runs on CPU time nothing else wants, and a page thread that wakes takes its core at
    # once (under nice 19 it could wait a scheduler slice). It holds no lock while it hashes (authenticate).
    if sys.platform.startswith("linux"):
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


# Checking a password runs on these threads: one per slot, so a login holding a slot finds one free.
_hash_threads = ThreadPoolExecutor(MAX_CONCURRENT_HASHES, thread_name_prefix="storyloop-hash",
                                   initializer=_lower_priority)
_counting = threading.Lock()
hash_stats = {"in_flight": 0, "peak": 0}  # for the tests and the benchmark: peak never above the bound
# Verified against when the username is unknown, so a wrong name costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("storyloop-timing-equaliser")


class UserError(ValueError):
    """A user command that cannot be carried out (unknown user, taken name, weak password)."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


class Forbidden(UserError):
    """The acting user's role does not allow this."""


RESEARCH_ROLES = (Role.researcher, Role.admin)


def require_role(session: Session, user_id: int, what: str, roles: tuple[Role, ...] = RESEARCH_ROLES) -> User:
    """The acting user, if active and in `roles`; else Forbidden. Read in the caller's transaction, so a role
    taken away a moment ago counts. Research writes call this whatever page calls them."""
    user = session.get(User, user_id, populate_existing=True)
    if user is None or not user.is_active or Role(user.role) not in roles:
        who = f"{user.username!r} ({Role(user.role).value})" if user is not None else f"user {user_id}"
        raise Forbidden(f"{who} may not {what}: {' and '.join(r.value + 's' for r in roles)} only")
    return user


def research_read(what: str):
    """Make a reader of other people's labels (or of research data) take the acting user, keyword `actor`, and
    refuse anyone but researchers and admins, whatever page or script calls it."""
    def decorate(read):
        @functools.wraps(read)
        def checked(session: Session, *args, actor: int, **kwargs):
            require_role(session, actor, what)
            return read(session, *args, **kwargs)
        return checked
    return decorate


class HashBusy(UserError):
    """Every password-hash slot stayed busy: the server is flooded with logins."""


def verify_password(password_hash: str, password: str) -> bool:
    if not _hash_slots.acquire(timeout=HASH_WAIT_S):
        raise HashBusy("the server is busy checking other logins: try again in a few seconds")
    try:
        with _counting:
            hash_stats["in_flight"] += 1
            hash_stats["peak"] = max(hash_stats["peak"], hash_stats["in_flight"])
        return _hash_threads.submit(_hasher.verify, password_hash, password).result()
    except (VerificationError, InvalidHashError):
        return False
    finally:
        with _counting:
            hash_stats["in_flight"] -= 1
        _hash_slots.release()


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user named {username!r}")
    return user


def normalize_email(email: str) -> str:
    """The stored form of an address (trimmed, lower-case), or UserError naming what is wrong with it."""
    value = email.strip().lower()
    if len(value) > 320 or not EMAIL_RE.match(value):
        raise UserError(f"invalid e-mail address {email!r}: expected name@domain")
    return value


def _check_email_free(session: Session, email: str, username: str | None = None) -> None:
    owner = session.scalar(select(User.username).where(User.email == email))
    if owner is not None and owner != username:
        raise UserError(f"e-mail address {email!r} already belongs to user {owner!r}")


def add_user(session: Session, username: str, password: str, role: Role = Role.annotator,
             email: str | None = None) -> User:
    if not USERNAME_RE.match(username):
        raise UserError(f"invalid username {username!r}: use 2-64 letters, digits, '_', '.' or '-'")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} already exists")
    if email is not None:
        email = normalize_email(email)
        _check_email_free(session, email)
    user = User(username=username, password_hash=hash_password(password), role=Role(role), email=email)
    session.add(user)
    session.flush()
    return user


def set_email(session: Session, username: str, email: str | None, actor: str | None = None) -> User:
    """Give the account the address single sign-on maps to it (None: password login only)."""
    user = get_user(session, username)
    email = normalize_email(email) if email is not None else None
    if email is not None:
        _check_email_free(session, email, username)
    if user.email != email:
        audit.record(session, "email_changed", actor=actor, target=username,
                     details={"from": user.email, "to": email})
        user.email = email
    return user


def user_by_email(session: Session, email: str) -> User | None:
    """The account an identity provider's address maps to (any case), or None; active or not."""
    try:
        return session.scalar(select(User).where(User.email == normalize_email(email)))
    except UserError:
        return None


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None: callers must not say which part was wrong.

    Ends the session's transaction (which has only read) before the password is hashed: a login waiting
    for a hash slot then holds no pooled connection (a burst of them took every one, and the annotators'
    pages waited behind it) nor, on SQLite, the database's one write lock. What the caller writes after
    (the throttle, the audit log) goes in a new transaction."""
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    session.commit()
    if not verify_password(stored, password) or user is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def set_role(session: Session, username: str, role: Role, actor: str | None = None) -> User:
    """A new role ends the account's logins: its next login is a new session with the new rights."""
    user = get_user(session, username)
    if user.role != Role(role):
        audit.record(session, "role_changed", actor=actor, target=username,
                     details={"from": Role(user.role).value, "to": Role(role).value})
        user.role = Role(role)
        end_sessions(session, username, actor=actor)
    return user


def set_active(session: Session, username: str, active: bool, actor: str | None = None) -> User:
    """Disabling ends every login at once (and the account's next submit is refused)."""
    user = get_user(session, username)
    if user.is_active != active:
        audit.record(session, "account_enabled" if active else "account_disabled", actor=actor, target=username)
    user.is_active = active
    if not active:
        end_sessions(session, username, actor=actor)
    return user


def set_password(session: Session, username: str, password: str, actor: str | None = None) -> int:
    """A new password (e.g. a reset by an admin) ends every login of the account; returns how many ended."""
    user = get_user(session, username)
    user.password_hash = hash_password(password)
    audit.record(session, "password_reset", actor=actor, target=username)
    return end_sessions(session, username, actor=actor)


def login_sessions(session: Session, username: str) -> list[LoginSession]:
    """The account's logins, newest first."""
    user = get_user(session, username)
    return list(session.scalars(select(LoginSession).where(LoginSession.user_id == user.id)
                                .order_by(LoginSession.created_at.desc(), LoginSession.id.desc())))


def end_sessions(session: Session, username: str, now: datetime | None = None, actor: str | None = None) -> int:
    """Revoke the account's live logins; returns how many there were."""
    now = now or utcnow()
    user = get_user(session, username)
    result = session.execute(update(LoginSession).where(LoginSession.user_id == user.id,
                                                        LoginSession.revoked_at.is_(None),
                                                        LoginSession.expires_at > now).values(revoked_at=now))
    ended = result.rowcount or 0
    if ended:
        audit.record(session, "sessions_ended", actor=actor, target=username, details={"sessions": ended})
    return ended
