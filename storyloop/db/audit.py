"""The audit log: one append-only row per security- or research-relevant act (see AuditEvent)."""

from __future__ import annotations

import getpass
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import AuditEvent, User, utcnow


def cli_actor() -> str:
    """Who a command-line act is recorded as: the operating-system user running it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def record(session: Session, action: str, *, actor_id: int | None = None, actor: str | None = None,
           target: str | None = None, client: str | None = None, details: dict | None = None) -> None:
    """Add one event in the caller's transaction: it commits with the act, or not at all."""
    if actor is None:
        user = session.get(User, actor_id) if actor_id is not None else None
        actor = user.username if user is not None else cli_actor()
    session.add(AuditEvent(at=utcnow(), actor_id=actor_id, actor=actor, action=action, target=target,
                           client=client, details=details))


def events(session: Session, user: str | None = None, since: datetime | None = None,
           limit: int | None = None) -> list[AuditEvent]:
    """Newest first; `user` matches the actor or the target (what was done by or to an account)."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if user is not None:
        query = query.where((AuditEvent.actor == user) | (AuditEvent.target == user))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query.limit(limit)))


_AGE = re.compile(r"^(\d+)\s*([mhd])$")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or an age such as 30m, 12h, 7d."""
    now = now or utcnow()
    if m := _AGE.match(text.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return now - timedelta(**{unit: int(m[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO date or time (2026-12-01) or an age (30m, 12h, 7d)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
