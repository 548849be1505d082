"""Building judged rounds for the DPO tests through the same code path the app uses."""

import json
from datetime import datetime, timezone

from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.judgments import JudgmentIn, Label, submit_judgment
from storyloop.db.models import Outcome, Role, Scenario
from storyloop.db.rounds import create_round
from storyloop.db.users import add_user
from tests.conftest import make_image

P, A, C = "pass", "anatomy-fail", "consistency-fail"  # what an annotator says of a candidate


def judged_round(settings, tmp_path, scenarios: int = 1, candidates: int = 4, references: int = 1,
                 annotators=("ann", "bob", "cat"), name: str = "r1", size=(32, 32), characters=None):
    """A round whose scenarios each have `candidates` images; returns (scenario ids, candidate ids, users).

    `size`: of every image, or a list with one size per scenario. `characters`: one name per reference
    (references then go in by character, e.g. ["Mia", "Tom", "Tom"]); None: a flat reference list."""
    src = tmp_path / f"src-{name}"
    rows = []
    sizes = size if isinstance(size, list) else [size] * scenarios
    for s in range(scenarios):
        refs = [f"ref{s}-{r}.png" for r in range(references)]
        cands = [f"c{s}-{c}.png" for c in range(candidates)]
        for i, f in enumerate(refs + cands):
            make_image(src / f, ((37 * s + 11 * i) % 255, (90 + 53 * i) % 255, (13 * s) % 255), size=sizes[s])
        by_character: dict[str, list[str]] = {}
        for ref, who in zip(refs, characters or []):
            by_character.setdefault(who, []).append(ref)
        rows.append({"id": f"s{s}", "story_id": f"story{s % 2}", "frame_index": s, "prompt": f"a red fox {s}",
                     "references": by_character if characters else refs, "candidates": cands})
    (src / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, name, src / "s.jsonl")
        users = {}
        for u in annotators:
            users[u] = add_user(s, f"{u}-{name}", "password123", Role.annotator).id
    with session_scope(settings.db_url) as s:
        scen = list(s.scalars(select(Scenario).where(Scenario.round.has(name=name)).order_by(Scenario.id)))
        return [sc.id for sc in scen], [[c.id for c in sc.candidates] for sc in scen], users


def judge(settings, scenario_id, candidate_ids, user_id, verdicts, ranks=None, outcome=None, key=None):
    """verdicts: P / A / C per candidate; ranks: {position: rank} among P candidates."""
    ranks = ranks or {}
    labels = {}
    for i, (cid, v) in enumerate(zip(candidate_ids, verdicts)):
        if v == C:
            labels[cid] = Label(False)
        elif v == A:
            labels[cid] = Label(True, False)
        else:
            labels[cid] = Label(True, True, ranks.get(i))
    if outcome is None:
        outcome = Outcome.ranked if any(v == P for v in verdicts) else Outcome.all_bad
    if outcome == Outcome.tie:
        labels = {c: Label(l.consistency_pass, l.anatomy_pass) for c, l in labels.items()}
    j = JudgmentIn(scenario_id=scenario_id, user_id=user_id,
                   idempotency_key=key or f"{scenario_id}-{user_id}-{datetime.now().timestamp()}-{id(verdicts)}",
                   outcome=outcome, shown_order=list(candidate_ids), shown_at=datetime.now(timezone.utc),
                   labels=labels)
    with session_scope(settings.db_url) as s:
        submit_judgment(s, j)


def judged_for_models(settings, tmp_path, models, **round_kw):
    """A round made for the tiny models under `models` (flux/, stage1/), every scenario judged alike by every
    annotator: candidates 1 and 4 pass (1 best), 2 fails anatomy, 3 consistency. Returns (scenarios, candidates)."""
    from storyloop.db.models import Round
    from storyloop.db.rounds import ModelSpec

    sids, cands, users = judged_round(settings, tmp_path, **round_kw)
    with session_scope(settings.db_url) as s:  # record the model spec on the round
        rnd = s.scalar(select(Round).where(Round.name == round_kw.get("name", "r1")))
        for k, v in ModelSpec(str(models / "flux"), models / "stage1").columns().items():
            setattr(rnd, k, v)
    for sid, cs in zip(sids, cands):
        for u in users.values():
            judge(settings, sid, cs, u, [P, A, C, P], ranks={0: 1, 3: 2})
    return sids, cands
