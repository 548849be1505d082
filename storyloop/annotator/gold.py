"""Gold items: a researcher's expected answer for a scenario, and how well each annotator matches them.

A judgment matches its gold answer when the outcome is the same, its winners are exactly the gold
winners, and every gold loser was failed (on consistency or anatomy) by the annotator.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import (
    Candidate,
    GoldAnswer,
    Judgment,
    JudgmentLabel,
    Outcome,
    Scenario,
    User,
)
from storyloop.db import audit
from storyloop.db.users import require_role, research_read


class GoldError(ValueError):
    """A gold answer that contradicts the protocol or the scenario; nothing was written."""


def winners_and_losers(outcome: Outcome, labels: list[JudgmentLabel]) -> tuple[set[int], set[int]]:
    """Winners: the best-ranked candidate (or every survivor of a tie). Losers: those that failed a check."""
    outcome = Outcome(outcome)
    losers = {l.candidate_id for l in labels if not l.consistency_pass or l.anatomy_pass is False}
    if outcome is Outcome.ranked:
        winners = {l.candidate_id for l in labels if l.aesthetics_rank == 1}
    elif outcome is Outcome.tie:
        winners = {l.candidate_id for l in labels if l.anatomy_pass}
    else:
        winners = set()
    return winners, losers


def set_gold(session: Session, scenario_id: int, outcome: Outcome, winners: list[int], losers: list[int], *,
             actor: int, notes: str | None = None) -> GoldAnswer:
    """Make (or replace) the scenario's gold answer; `actor` must be a researcher or admin."""
    require_role(session, actor, "set gold answers")
    outcome = Outcome(outcome)
    candidate_ids = set(session.scalars(select(Candidate.id).where(Candidate.scenario_id == scenario_id)))
    if not candidate_ids:
        raise GoldError(f"scenario {scenario_id} has no candidates")
    if outcome is Outcome.skipped:
        raise GoldError("a gold answer cannot be a skip")
    if not set(winners) | set(losers) <= candidate_ids:
        raise GoldError("winners and losers must be candidates of this scenario")
    if set(winners) & set(losers):
        raise GoldError("a candidate cannot be both a winner and a loser")
    if outcome is Outcome.ranked and len(winners) != 1:
        raise GoldError("a ranked gold answer has exactly one winner")
    if outcome is Outcome.tie and len(winners) < 2:
        raise GoldError("a tie needs at least two winners")
    if outcome is Outcome.all_bad and winners:
        raise GoldError("'all bad' has no winners")
    gold = session.scalar(select(GoldAnswer).where(GoldAnswer.scenario_id == scenario_id))
    if gold is None:
        gold = GoldAnswer(scenario_id=scenario_id)
        session.add(gold)
    gold.outcome, gold.winner_candidate_ids, gold.loser_candidate_ids = outcome, sorted(winners), sorted(losers)
    gold.created_by, gold.notes = actor, notes
    audit.record(session, "gold_set", actor_id=actor, target=session.get(Scenario, scenario_id).key,
                 details={"outcome": outcome.value, "winners": sorted(winners), "losers": sorted(losers)})
    session.flush()
    return gold


def clear_gold(session: Session, scenario_id: int, *, actor: int) -> None:
    require_role(session, actor, "clear gold answers")
    gold = session.scalar(select(GoldAnswer).where(GoldAnswer.scenario_id == scenario_id))
    if gold is not None:
        session.delete(gold)
        audit.record(session, "gold_cleared", actor_id=actor, target=session.get(Scenario, scenario_id).key)


def matches_gold(gold: GoldAnswer, judgment: Judgment) -> bool:
    if Outcome(judgment.outcome) != Outcome(gold.outcome):
        return False
    winners, losers = winners_and_losers(judgment.outcome, judgment.labels)
    return winners == set(gold.winner_candidate_ids) and set(gold.loser_candidate_ids) <= losers


@dataclass(frozen=True)
class GoldScore:
    username: str
    gold_judged: int  # gold scenarios judged (skips excluded)
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.gold_judged if self.gold_judged else None


@research_read("read gold scores")
def gold_scores(session: Session, round_id: int) -> list[GoldScore]:
    """Per annotator: each one's latest non-skipped judgment of every gold scenario, scored."""
    golds = {g.scenario_id: g for g in session.scalars(
        select(GoldAnswer).join(Scenario).where(Scenario.round_id == round_id))}
    if not golds:
        return []
    latest: dict[tuple[int, int], Judgment] = {}
    for j in session.scalars(select(Judgment).where(Judgment.scenario_id.in_(golds)).order_by(Judgment.revision)):
        latest[(j.scenario_id, j.user_id)] = j
    names = dict(session.execute(select(User.id, User.username)).all())
    judged: dict[int, int] = {}
    correct: dict[int, int] = {}
    for (sid, uid), j in latest.items():
        if j.outcome == Outcome.skipped:
            continue
        judged[uid] = judged.get(uid, 0) + 1
        correct[uid] = correct.get(uid, 0) + matches_gold(golds[sid], j)
    return sorted((GoldScore(names[uid], n, correct[uid]) for uid, n in judged.items()), key=lambda s: s.username)


@research_read("read a gold answer")
def get_gold(session: Session, scenario_id: int) -> GoldAnswer | None:
    return session.scalar(select(GoldAnswer).where(GoldAnswer.scenario_id == scenario_id))
