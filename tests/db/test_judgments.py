from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.judgments import (JudgmentError, JudgmentIn, Label, current_judgments, history,
                                    submit_judgment)
from storyloop.db.models import Judgment, JudgmentLabel, Outcome, Role, Scenario
from storyloop.db.rounds import create_round
from storyloop.db.users import add_user, set_active
from tests.db.test_round_import import write_jsonl
from tests.conftest import make_image


@pytest.fixture
def scenario(settings, tmp_path):
    """(scenario id, candidate ids, annotator ids) for one scenario with three candidates."""
    src = tmp_path / "src"
    for i in range(4):
        make_image(src / f"{i}.png", (60 * i, 20, 20))
    path = write_jsonl(src / "s.jsonl", [{"id": "s", "story_id": "st", "frame_index": 0, "prompt": "p",
                                          "references": ["0.png"], "candidates": ["1.png", "2.png", "3.png"]}])
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r", path)
        users = [add_user(s, n, "password123", Role.annotator).id for n in ("ann", "bob")]
    with session_scope(settings.db_url) as s:
        sc = s.scalar(select(Scenario))
        return sc.id, [c.id for c in sc.candidates], users


def ranked(scenario_id, cands, user, key, winner=0):
    a, b, c = cands
    labels = {a: Label(True, True), b: Label(True, True), c: Label(False)}
    winner_id = cands[winner]
    labels = {cid: Label(l.consistency_pass, l.anatomy_pass, 1 if cid == winner_id else None)
              for cid, l in labels.items()}
    return JudgmentIn(scenario_id=scenario_id, user_id=user, idempotency_key=key, outcome=Outcome.ranked,
                      shown_order=[c, a, b], shown_at=datetime.now(timezone.utc), labels=labels)


def n_rows(url):
    with session_scope(url) as s:
        return (s.scalar(select(func.count()).select_from(Judgment)),
                s.scalar(select(func.count()).select_from(JudgmentLabel)))


def test_double_submit_creates_one_judgment(settings, scenario):
    sid, cands, (ann, _) = scenario
    with session_scope(settings.db_url) as s:
        first, created = submit_judgment(s, ranked(sid, cands, ann, "k1"))
        assert created
    with session_scope(settings.db_url) as s:
        again, created = submit_judgment(s, ranked(sid, cands, ann, "k1", winner=1))
        assert not created and again.id == first.id
    assert n_rows(settings.db_url) == (1, 3)


def test_a_disabled_account_stores_nothing_more(settings, scenario):
    sid, cands, (ann, bob) = scenario
    with session_scope(settings.db_url) as s:
        set_active(s, "ann", False)
    with pytest.raises(JudgmentError, match="disabled"), session_scope(settings.db_url) as s:
        submit_judgment(s, ranked(sid, cands, ann, "k1"))
    with session_scope(settings.db_url) as s:
        submit_judgment(s, ranked(sid, cands, bob, "k2"))
    assert n_rows(settings.db_url) == (1, 3)


def test_edit_is_a_new_revision_and_keeps_the_old(settings, scenario):
    sid, cands, (ann, bob) = scenario
    with session_scope(settings.db_url) as s:
        submit_judgment(s, ranked(sid, cands, ann, "k1", winner=0))
        submit_judgment(s, ranked(sid, cands, ann, "k2", winner=1))
        submit_judgment(s, ranked(sid, cands, bob, "k3", winner=0))
    with session_scope(settings.db_url) as s:
        revs = history(s, sid, ann)
        assert [j.revision for j in revs] == [1, 2]
        winners = [[l.candidate_id for l in j.labels if l.aesthetics_rank == 1] for j in revs]
        assert winners == [[cands[0]], [cands[1]]]
        latest = current_judgments(s, sid)
        assert [(j.user_id, j.revision) for j in latest] == [(ann, 2), (bob, 1)]


def test_shown_order_and_times_are_recorded(settings, scenario):
    sid, cands, (ann, _) = scenario
    j = ranked(sid, cands, ann, "k1")
    with session_scope(settings.db_url) as s:
        submit_judgment(s, j)
    with session_scope(settings.db_url) as s:
        row = s.scalar(select(Judgment))
        assert row.shown_order == [cands[2], cands[0], cands[1]]
        assert row.submitted_at >= row.shown_at.replace(tzinfo=row.submitted_at.tzinfo)


@pytest.mark.parametrize("mutate, message", [
    (lambda j, c: setattr(j, "shown_order", c[:2]), "shown order"),
    (lambda j, c: j.labels.pop(c[0]), "labels must cover"),
    (lambda j, c: j.labels.update({c[2]: Label(False, True)}), "only after consistency passed"),
    (lambda j, c: j.labels.update({c[0]: Label(True, None)}), "anatomy must be judged"),
    (lambda j, c: j.labels.update({c[1]: Label(True, False, 2)}), "only candidates that passed both"),
    (lambda j, c: j.labels.update({c[1]: Label(True, True, 1)}), "ranks must be distinct"),
    (lambda j, c: setattr(j, "outcome", Outcome.all_bad), "'all bad' means"),
    (lambda j, c: (setattr(j, "outcome", Outcome.skipped), setattr(j, "skip_reason", "blurry")),
     "carries no labels"),
    (lambda j, c: (setattr(j, "outcome", Outcome.skipped), j.labels.clear()), "needs a reason"),
])
def test_judgments_that_break_the_protocol_are_refused_and_nothing_is_written(settings, scenario, mutate, message):
    sid, cands, (ann, _) = scenario
    j = ranked(sid, cands, ann, "k1")
    mutate(j, cands)
    with pytest.raises(JudgmentError, match=message), session_scope(settings.db_url) as s:
        submit_judgment(s, j)
    assert n_rows(settings.db_url) == (0, 0)


def test_skip_with_reason_and_tie_are_stored(settings, scenario):
    sid, cands, (ann, bob) = scenario
    a, b, c = cands
    with session_scope(settings.db_url) as s:
        submit_judgment(s, JudgmentIn(sid, ann, "skip", Outcome.skipped, cands, datetime.now(timezone.utc),
                                      skip_reason="images did not load"))
        submit_judgment(s, JudgmentIn(sid, bob, "tie", Outcome.tie, cands, datetime.now(timezone.utc),
                                      labels={a: Label(True, True), b: Label(True, True), c: Label(False)}))
    with session_scope(settings.db_url) as s:
        outcomes = {j.user_id: (j.outcome, j.skip_reason) for j in s.scalars(select(Judgment))}
        assert outcomes == {ann: (Outcome.skipped, "images did not load"), bob: (Outcome.tie, None)}
