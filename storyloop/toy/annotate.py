"""Scripted annotators: they take tasks from the app's queue, press the app's keys, and submit.

Each one asks `next_task` for a lease, reads the candidates with the attribute readers, applies the
hierarchy (`judge.assess`, with its own noise), drives the same `Draft` state machine the judging
page drives (number keys, Enter), and submits through `submit_task`: leases, idempotency keys and
revisions are exactly the app's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image
from sqlalchemy import select

from storyloop.annotator.protocol import Step
from storyloop.annotator.work_queue import next_task
from storyloop.annotator.submit import submit_task
from storyloop.db import session_scope
from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate, Role, Scenario, User
from storyloop.db.rounds import get_round
from storyloop.db.users import add_user
from storyloop.settings import Settings
from storyloop.toy.judge import aesthetic_ranking, assess
from storyloop.toy.readers import AttributeReader, read
from storyloop.toy.scenarios import ToyScenario


@dataclass
class ScriptedAnnotator:
    username: str
    noise: float
    seed: int


def ensure_annotators(settings: Settings, annotators: list[ScriptedAnnotator]) -> dict[str, int]:
    ids = {}
    with session_scope(settings.db_url) as session:
        for a in annotators:
            user = session.scalar(select(User).where(User.username == a.username))
            if user is None:
                user = add_user(session, a.username, f"scripted-{a.seed}-{a.username}", Role.annotator)
            ids[a.username] = user.id
    return ids


def judge_round(settings: Settings, round_name: str, annotators: list[ScriptedAnnotator],
                truth: dict[str, ToyScenario], readers: AttributeReader) -> int:
    """Every scripted annotator works the round's queue until it is empty; returns judgments made."""
    ids = ensure_annotators(settings, annotators)
    made = 0
    with session_scope(settings.db_url) as session:
        round_id = get_round(session, round_name).id
    for a in annotators:
        rng = random.Random(f"{a.seed}:{a.username}")
        while True:
            with session_scope(settings.db_url) as session:
                task = next_task(session, ids[a.username], round_id)
                if task is None:
                    break
                scenario = session.get(Scenario, task.scenario_id)
                query = select(Candidate).where(Candidate.scenario_id == scenario.id)
                cands = {c.id: c for c in session.scalars(query)}
                images = [Image.open(asset_path(settings.store_dir, cands[cid].asset)) for cid in task.shown_order]
                verdicts = [assess(r, truth[scenario.key].asked, rng, a.noise) for r in read(readers, images)]
                _press_keys(task.draft, verdicts, rng, a.noise)
                if submit_task(session, task).created:
                    made += 1
    return made


def _press_keys(draft, verdicts, rng: random.Random, noise: float) -> None:
    """What a person does on the judging page: mark failures with number keys, Enter, rank, Enter."""
    for pos, v in enumerate(verdicts, start=1):
        if not v.consistency:
            draft.toggle(pos)
    draft.advance()
    if draft.step is Step.anatomy:
        for pos, v in enumerate(verdicts, start=1):
            if v.consistency and not v.anatomy:
                draft.toggle(pos)
        draft.advance()
    if draft.step is Step.aesthetics and len(draft.survivors()) > 1:
        survivors = [pos for pos, v in enumerate(verdicts, start=1) if v.consistency and v.anatomy]
        for i in aesthetic_ranking([verdicts[p - 1].score for p in survivors], rng, noise):
            draft.toggle(survivors[i])
