"""Login throttling: exponential back-off per account name and per client address, kept in the database.

After FREE_TRIES failures in a row a key must wait BASE_DELAY, doubling with each further failure up to
MAX_DELAY; failures older than FORGET_AFTER start the count again. The account key is taken for any name
typed, known or not, so the answer never tells whether an account exists. A successful login clears its
account key only: one valid account must not buy an address more guesses at the others.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storyloop.db.models import LoginThrottle, utcnow

FREE_TRIES = 3
BASE_DELAY = timedelta(seconds=2)
MAX_DELAY = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)


class Throttled(Exception):
    """Too many recent failures (or every password-hash slot busy): wait `seconds`, then try again."""

    def __init__(self, seconds: float):
        self.seconds = max(1, math.ceil(seconds))
        super().__init__(f"Too many login attempts: try again in {self.seconds} s.")


def aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def throttle_keys(username: str, client: str | None) -> list[str]:
    keys = [f"user:{username.strip().lower()[:300]}"]
    if client:
        keys.append(f"client:{client[:300]}")
    return keys


def wait_seconds(session: Session, keys: list[str], now: datetime | None = None) -> float:
    """How long the longest-locked of `keys` must still wait (0: go ahead)."""
    now = now or utcnow()
    locked = session.scalars(select(LoginThrottle.locked_until).where(LoginThrottle.key.in_(keys))).all()
    return max([(aware(t) - now).total_seconds() for t in locked if t is not None] + [0.0])


def delay_after(failures: int) -> timedelta:
    if failures < FREE_TRIES:
        return timedelta(0)
    return min(BASE_DELAY * 2 ** (failures - FREE_TRIES), MAX_DELAY)


def record_failure(session: Session, keys: list[str], now: datetime | None = None) -> None:
    now = now or utcnow()
    for key in keys:
        row = session.scalar(select(LoginThrottle).where(LoginThrottle.key == key).with_for_update())
        if row is None:
            try:
                with session.begin_nested():
                    row = LoginThrottle(key=key, failures=0, last_failure_at=now)
                    session.add(row)
            except IntegrityError:  # another process counted this key's first failure meanwhile
                row = session.scalar(select(LoginThrottle).where(LoginThrottle.key == key).with_for_update())
        if now - aware(row.last_failure_at) > FORGET_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        wait = delay_after(row.failures)
        row.locked_until = now + wait if wait else None
    # keys nobody has failed on for long are forgotten (a flood of random names leaves no lasting rows)
    session.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < now - FORGET_AFTER))


def record_success(session: Session, username: str) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == throttle_keys(username, None)[0]))
