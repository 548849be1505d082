"""Two processes writing judgments at once: nothing lost, nothing doubled, no 'database is locked'."""

import multiprocessing as mp

from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.judgments import submit_judgment
from storyloop.db.models import Judgment
from tests.db.test_judgments import ranked, scenario  # noqa: F401  (fixture)

N = 40


def _writer(url: str, sid: int, cands: list[int], own_user: int, shared_user: int, name: str, start) -> str:
    start.wait()
    try:
        for i in range(N):
            with session_scope(url) as s:
                submit_judgment(s, ranked(sid, cands, own_user, f"{name}-{i}", winner=i % 2))
            # Both processes send this one: exactly one of them may create it.
            with session_scope(url) as s:
                submit_judgment(s, ranked(sid, cands, shared_user, f"shared-{i}"))
    except Exception as exc:  # reported to the parent, which fails the test with it
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_two_processes_write_judgments_concurrently_without_loss_or_duplicates(settings, scenario):
    sid, cands, (ann, bob) = scenario
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(_writer, [(settings.db_url, sid, cands, ann, bob, "a", start),
                                             (settings.db_url, sid, cands, bob, ann, "b", start)])
    assert results == ["ok", "ok"]
    with session_scope(settings.db_url) as s:
        rows = s.scalars(select(Judgment)).all()
        keys = [j.idempotency_key for j in rows]
        assert len(keys) == len(set(keys)) == 2 * N + N
        for user in (ann, bob):
            revisions = sorted(j.revision for j in rows if j.user_id == user)
            assert revisions == list(range(1, len(revisions) + 1))  # no gap, no double
