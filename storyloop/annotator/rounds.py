"""Round settings researchers change from the app: k, gold rate, skip policy."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from storyloop.db.models import Round, SkipPolicy
from storyloop.db.rounds import RoundError, round_overviews
from storyloop.db import audit
from storyloop.db.users import require_role


@dataclass(frozen=True)
class RoundRow:
    id: int
    name: str
    parent: str | None
    scenarios: int
    candidates: int
    judgments: int
    k: int
    gold_rate: float
    skip_policy: SkipPolicy


def list_rounds(session: Session) -> list[RoundRow]:
    """Every round, newest first, with its size."""
    rows = [RoundRow(o.round.id, o.round.name, o.round.parent.name if o.round.parent else None, o.scenarios,
                     o.candidates, o.judgments, o.round.judgments_per_scenario, o.round.gold_rate,
                     SkipPolicy(o.round.skip_policy)) for o in round_overviews(session)]
    return sorted(rows, key=lambda r: -r.id)


def update_round(session: Session, round_id: int, k: int, gold_rate: float, skip_policy: SkipPolicy, *,
                 actor: int) -> Round:
    """Change how a round is annotated; judgments already given are untouched. Researchers and admins only."""
    require_role(session, actor, "change a round's settings")
    if k < 1:
        raise RoundError("judgments per scenario must be at least 1")
    if not 0 <= gold_rate <= 1:
        raise RoundError("gold rate must be between 0 and 1")
    rnd = session.get(Round, round_id)
    if rnd is None:
        raise RoundError(f"no round with id {round_id}")
    before = {"k": rnd.judgments_per_scenario, "gold_rate": rnd.gold_rate,
              "skip_policy": SkipPolicy(rnd.skip_policy).value}
    rnd.judgments_per_scenario, rnd.gold_rate, rnd.skip_policy = k, gold_rate, SkipPolicy(skip_policy)
    audit.record(session, "round_settings_changed", actor_id=actor, target=rnd.name,
                 details={"from": before, "to": {"k": k, "gold_rate": gold_rate,
                                                 "skip_policy": SkipPolicy(skip_policy).value}})
    session.flush()
    return rnd
