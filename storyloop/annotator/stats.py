"""What researchers see of a round: progress, time per judgment, skip reasons, agreement, outcomes.

Everything reads each annotator's latest revision of a scenario (edits replace, never add), except
the timing, which is about every submit an annotator made.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from storyloop.annotator.agreement import krippendorff_alpha, pairwise_agreement
from storyloop.annotator.gold import gold_scores
from storyloop.annotator.work_queue import aware
from storyloop.db import audit
from storyloop.db.users import research_read
from storyloop.db.models import (Candidate, GoldAnswer, Judgment, Lease, Outcome, Round, Scenario,
                                 SkipPolicy, User, utcnow)
from storyloop.db.users import require_role


def latest_judgments(session: Session, round_id: int) -> list[Judgment]:
    """Each annotator's latest revision of each scenario of the round (labels loaded)."""
    latest = (select(Judgment.scenario_id, Judgment.user_id, func.max(Judgment.revision).label("rev"))
              .join(Scenario, Scenario.id == Judgment.scenario_id).where(Scenario.round_id == round_id)
              .group_by(Judgment.scenario_id, Judgment.user_id).subquery())
    return list(session.scalars(
        select(Judgment).join(latest, and_(Judgment.scenario_id == latest.c.scenario_id,
                                           Judgment.user_id == latest.c.user_id,
                                           Judgment.revision == latest.c.rev))
        .order_by(Judgment.scenario_id, Judgment.user_id)))


def _usernames(session: Session) -> dict[int, str]:
    return dict(session.execute(select(User.id, User.username)).all())


@research_read("read a round's progress")
def progress_by_scenario(session: Session, round_id: int) -> pd.DataFrame:
    """One row per scenario: judged / needed, skips, live leases, gold."""
    rnd = session.get(Round, round_id)
    now = utcnow()
    counts_skips = rnd.skip_policy == SkipPolicy.counts
    done, skipped = Counter(), Counter()
    for j in latest_judgments(session, round_id):
        if j.outcome == Outcome.skipped:
            skipped[j.scenario_id] += 1
        if j.outcome != Outcome.skipped or counts_skips:
            done[j.scenario_id] += 1
    leased = Counter(session.scalars(select(Lease.scenario_id).join(Scenario).where(
        Scenario.round_id == round_id, Lease.expires_at > now)))
    gold = set(session.scalars(select(GoldAnswer.scenario_id).join(Scenario).where(Scenario.round_id == round_id)))
    n_cands = dict(session.execute(select(Candidate.scenario_id, func.count()).join(Scenario)
                                   .where(Scenario.round_id == round_id).group_by(Candidate.scenario_id)).all())
    rows = [{"scenario": s.key, "story": s.story_id, "frame": s.frame_index, "candidates": n_cands.get(s.id, 0),
             "judged": done[s.id], "needed": rnd.judgments_per_scenario, "skipped": skipped[s.id],
             "in progress": leased[s.id], "gold": s.id in gold,
             "complete": done[s.id] >= rnd.judgments_per_scenario,
             # a submit on a lease that lapsed and was taken by someone else is kept (never lose work) and
             # counted here: the scenario has more than k judgments
             "over k": max(0, done[s.id] - rnd.judgments_per_scenario)}
            for s in session.scalars(select(Scenario).where(Scenario.round_id == round_id)
                                     .order_by(Scenario.story_id, Scenario.frame_index, Scenario.id))]
    return pd.DataFrame(rows, columns=["scenario", "story", "frame", "candidates", "judged", "needed", "skipped",
                                       "in progress", "gold", "complete", "over k"])


def judging_seconds(shown_at, submitted_at, active_seconds: float | None) -> float:
    """Time spent judging: the measured active time (idle gaps left out, see work_queue.IDLE_GAP); for judgments
    stored before it was measured, shown -> submitted."""
    if active_seconds is not None:
        return float(active_seconds)
    return (aware(submitted_at) - aware(shown_at)).total_seconds()


@research_read("read a round's judgment times")
def judgment_times(session: Session, round_id: int) -> pd.DataFrame:
    """Every submit of the round: annotator, scenario, revision, outcome, seconds spent judging (`judging_seconds`)."""
    names = _usernames(session)
    rows = session.execute(select(Judgment.user_id, Scenario.key, Judgment.revision, Judgment.outcome,
                                  Judgment.shown_at, Judgment.submitted_at, Judgment.active_seconds)
                           .join(Scenario, Scenario.id == Judgment.scenario_id)
                           .where(Scenario.round_id == round_id).order_by(Judgment.submitted_at)).all()
    return pd.DataFrame([{"annotator": names[uid], "scenario": key, "revision": rev, "outcome": Outcome(o).value,
                          "seconds": judging_seconds(shown, sub, active), "submitted_at": aware(sub)}
                         for uid, key, rev, o, shown, sub, active in rows],
                        columns=["annotator", "scenario", "revision", "outcome", "seconds", "submitted_at"])


@research_read("read the annotators' progress")
def progress_by_annotator(session: Session, round_id: int) -> pd.DataFrame:
    """One row per annotator: judged, skipped, edits, median and p90 seconds per judgment, gold accuracy."""
    latest = latest_judgments(session, round_id)
    names = _usernames(session)
    times = judgment_times.__wrapped__(session, round_id)  # the caller's role is checked already
    gold = {g.username: g for g in gold_scores.__wrapped__(session, round_id)}
    per: dict[str, Counter] = defaultdict(Counter)
    for j in latest:
        per[names[j.user_id]]["skipped" if j.outcome == Outcome.skipped else "judged"] += 1
    rows = []
    for name in sorted(per):
        t = times[times.annotator == name]
        g = gold.get(name)
        rows.append({"annotator": name, "judged": per[name]["judged"], "skipped": per[name]["skipped"],
                     "edits": int((t.revision > 1).sum()),
                     "median s": float(t.seconds.median()) if len(t) else None,
                     "p90 s": float(t.seconds.quantile(0.9)) if len(t) else None,
                     "gold judged": g.gold_judged if g else 0,
                     "gold accuracy": g.accuracy if g else None})
    return pd.DataFrame(rows, columns=["annotator", "judged", "skipped", "edits", "median s", "p90 s",
                                       "gold judged", "gold accuracy"])


@research_read("read a round's skip reasons")
def skip_reasons(session: Session, round_id: int) -> pd.DataFrame:
    """How often each reason was given, over the annotators' current skips."""
    reasons = Counter(j.skip_reason for j in latest_judgments(session, round_id) if j.outcome == Outcome.skipped)
    return pd.DataFrame(reasons.most_common(), columns=["reason", "skips"])


# -- agreement ------------------------------------------------------------------------------------

CRITERIA = {
    "consistency": "each candidate: consistent with the references (pass / fail)",
    "anatomy": "each candidate that passed consistency: anatomy (pass / fail)",
    "best pick": "each scenario: which candidate is best (or tie, or all bad)",
    "outcome": "each scenario: ranked / tie / all bad",
}


def agreement_units(session: Session, round_id: int) -> dict[str, list[list]]:
    """Per criterion, the units and the values the annotators gave them (skips give none)."""
    units: dict[str, dict] = {c: defaultdict(list) for c in CRITERIA}
    for j in latest_judgments(session, round_id):
        if j.outcome == Outcome.skipped:
            continue
        for lab in j.labels:
            units["consistency"][lab.candidate_id].append(lab.consistency_pass)
            if lab.anatomy_pass is not None:
                units["anatomy"][lab.candidate_id].append(lab.anatomy_pass)
        best = next((l.candidate_id for l in j.labels if l.aesthetics_rank == 1), None)
        units["best pick"][j.scenario_id].append(best if best is not None else Outcome(j.outcome).value)
        units["outcome"][j.scenario_id].append(Outcome(j.outcome).value)
    return {c: list(u.values()) for c, u in units.items()}


@research_read("read a round's agreement")
def agreement(session: Session, round_id: int) -> pd.DataFrame:
    """Krippendorff's alpha (nominal) and pairwise exact agreement, per criterion."""
    rows = []
    for criterion, units in agreement_units(session, round_id).items():
        paired = [u for u in units if len(u) >= 2]
        rows.append({"criterion": criterion, "alpha": krippendorff_alpha(units),
                     "pairwise agreement": pairwise_agreement(units), "units": len(paired),
                     "labels": sum(len(u) for u in paired), "what": CRITERIA[criterion]})
    return pd.DataFrame(rows, columns=["criterion", "alpha", "pairwise agreement", "units", "labels", "what"])


# -- one scenario ---------------------------------------------------------------------------------

@dataclass
class CandidateTally:
    candidate_id: int
    index: int
    consistency_pass: int = 0
    anatomy_pass: int = 0
    anatomy_asked: int = 0
    best: int = 0
    verdict: str = "undecided"  # winner / loser / survived / split, by majority of the judgments


@dataclass
class ScenarioOutcome:
    """All annotators' current judgments of one scenario, aggregated per candidate by majority."""

    judgments: int  # non-skipped
    skipped: int
    outcomes: Counter
    outcome: str  # the majority outcome, or "undecided"
    candidates: list[CandidateTally] = field(default_factory=list)


@research_read("read a scenario's judgments")
def scenario_outcome(session: Session, scenario_id: int) -> ScenarioOutcome:
    scenario = session.get(Scenario, scenario_id)
    judgments = [j for j in latest_judgments(session, scenario.round_id) if j.scenario_id == scenario_id]
    judged = [j for j in judgments if j.outcome != Outcome.skipped]
    outcomes = Counter(Outcome(j.outcome).value for j in judged)
    top = outcomes.most_common(2)
    majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else "undecided"
    tallies = {c.id: CandidateTally(c.id, c.index) for c in scenario.candidates}
    for j in judged:
        for lab in j.labels:
            t = tallies[lab.candidate_id]
            t.consistency_pass += lab.consistency_pass
            if lab.anatomy_pass is not None:
                t.anatomy_asked += 1
                t.anatomy_pass += lab.anatomy_pass
            t.best += lab.aesthetics_rank == 1 or (j.outcome == Outcome.tie and bool(lab.anatomy_pass))
    n = len(judged)
    for t in tallies.values():
        if not n:
            continue
        if t.best * 2 > n:
            t.verdict = "winner"
        elif (n - t.anatomy_pass) * 2 > n:  # failed consistency or anatomy for most annotators
            t.verdict = "loser"
        elif t.anatomy_pass * 2 > n:  # passed both checks for most, best for too few
            t.verdict = "survived"
        else:
            t.verdict = "split"
    return ScenarioOutcome(n, len(judgments) - n, outcomes, majority, list(tallies.values()))


# -- export ---------------------------------------------------------------------------------------

EXPORT_COLUMNS = ["round", "scenario", "story", "frame", "annotator", "revision", "outcome", "skip_reason",
                  "candidate_id", "candidate_index", "shown_position", "consistency_pass", "anatomy_pass",
                  "aesthetics_rank", "shown_at", "submitted_at", "seconds"]


@research_read("read a round's judgments")
def judgments_table(session: Session, round_id: int) -> pd.DataFrame:
    """The round's current judgments, one row per judged candidate (one row for a skip): for a CSV."""
    rnd = session.get(Round, round_id)
    names = _usernames(session)
    scenarios = {s.id: s for s in session.scalars(select(Scenario).where(Scenario.round_id == round_id))}
    index = dict(session.execute(select(Candidate.id, Candidate.index).join(Scenario)
                                 .where(Scenario.round_id == round_id)).all())
    rows = []
    for j in latest_judgments(session, round_id):
        sc = scenarios[j.scenario_id]
        base = {"round": rnd.name, "scenario": sc.key, "story": sc.story_id, "frame": sc.frame_index,
                "annotator": names[j.user_id], "revision": j.revision, "outcome": Outcome(j.outcome).value,
                "skip_reason": j.skip_reason, "shown_at": aware(j.shown_at), "submitted_at": aware(j.submitted_at),
                "seconds": judging_seconds(j.shown_at, j.submitted_at, j.active_seconds)}
        if not j.labels:
            rows.append(base)
        for lab in j.labels:
            rows.append({**base, "candidate_id": lab.candidate_id, "candidate_index": index[lab.candidate_id],
                         "shown_position": j.shown_order.index(lab.candidate_id) + 1,
                         "consistency_pass": lab.consistency_pass, "anatomy_pass": lab.anatomy_pass,
                         "aesthetics_rank": lab.aesthetics_rank})
    table = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    # A skip has no candidate columns: nullable types keep the others integers and booleans, not floats.
    return table.astype({c: "Int64" for c in INTEGER_COLUMNS} | {c: "boolean" for c in BOOLEAN_COLUMNS})


INTEGER_COLUMNS = ["frame", "revision", "candidate_id", "candidate_index", "shown_position", "aesthetics_rank"]
BOOLEAN_COLUMNS = ["consistency_pass", "anatomy_pass"]
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_safe_csv(table: pd.DataFrame) -> bytes:
    """CSV in which no text cell can run as a spreadsheet formula: those that start like one get a leading
    apostrophe (text written by annotators, such as a skip reason, is untrusted)."""
    def neutral(value):
        return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value

    text_columns = [c for c in table.columns if pd.api.types.is_string_dtype(table[c]) or table[c].dtype == object]
    safe = table.assign(**{c: table[c].map(neutral) for c in text_columns})
    return safe.to_csv(index=False).encode()


def export_judgments_csv(session: Session, round_id: int, *, actor: int) -> bytes:
    """The round's judgments as a safe CSV, for a researcher or admin, and the export in the audit log.

    The role is read now, when the file is made (a click on Download), not when the page was drawn: a
    researcher made an annotator since then gets nothing, and nothing is logged."""
    require_role(session, actor, "export judgments")
    table = judgments_table.__wrapped__(session, round_id)  # the role is checked just above
    audit.record(session, "export", actor_id=actor, target=session.get(Round, round_id).name,
                 details={"format": "csv", "rows": len(table)})
    return to_safe_csv(table)
