"""Passwords checked on worker processes (storyloop.annotator.login_worker): real spawned processes, the real
database; what the login route gets back, the bounds, the scheduling class, and workers that die."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storyloop.annotator import login_worker, web
from storyloop.annotator.auth import COOKIE, resume
from storyloop.annotator.login_worker import LoginOutcome, LoginWorkers, check_login
from storyloop.db import session_scope
from storyloop.db.models import AuditEvent, Role
from storyloop.db.users import add_user
from tests.annotator.test_web import PASSWORD, make_client, post_login

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and scheduling classes")


@pytest.fixture(scope="module")
def workers():
    pool = LoginWorkers(processes=2)
    for started in pool.start():
        started.result(timeout=120)
    assert len(pool.pids()) == 2
    yield pool
    pool.shutdown()


@pytest.fixture
def url(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", PASSWORD, Role.annotator)
    return migrated_url


def check(workers: LoginWorkers, url: str, username: str = "ann", password: str = PASSWORD,
          old_token: str | None = None) -> LoginOutcome:
    return asyncio.run(workers.check(url, username, password, "203.0.113.7", old_token))


def audit_count(url: str, action: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def test_a_worker_checks_the_password_and_starts_the_session(workers, url):
    good = check(workers, url)
    assert good.token and good.retry_after is None and not good.db_down
    with session_scope(url) as s:
        assert resume(s, good.token).username == "ann"
    wrong = check(workers, url, password="not-the-password")
    assert wrong == LoginOutcome()  # refused: no token, no wait
    assert audit_count(url, "login") == 1 and audit_count(url, "login_failed") == 1


def test_a_worker_rotates_the_token_the_browser_held(workers, url):
    first = check(workers, url).token
    second = check(workers, url, old_token=first).token
    with session_scope(url) as s:
        assert resume(s, first) is None and resume(s, second) is not None


def test_a_worker_throttles_as_the_server_did(workers, url):
    for _ in range(3):
        assert check(workers, url, password="not-the-password").token is None
    throttled = check(workers, url)  # the right password waits its turn too
    assert throttled.token is None and throttled.retry_after in (1, 2)
    assert audit_count(url, "login") == 0


def test_the_route_answers_from_the_workers(workers, url):
    client = make_client(web.WebConfig(url), workers=workers)
    response = post_login(client)
    assert response.status_code == 303 and COOKIE in response.headers["set-cookie"]
    assert post_login(client, password="not-the-password").status_code == 401


def test_an_unreachable_database_is_said_not_raised(workers):
    outcome = check(workers, "postgresql+psycopg://storyloop@127.0.0.1:1/none")
    assert outcome == LoginOutcome(db_down=True)
    response = post_login(make_client(web.WebConfig("postgresql+psycopg://storyloop@127.0.0.1:1/none"),
                                      workers=workers))
    assert response.status_code == 503 and web.DB_DOWN in response.text


def test_workers_run_at_the_lowest_priority_and_hash_in_the_idle_class(workers, url):
    for _ in range(4):  # a hash on each worker, most likely (each starts its hash thread at its first)
        check(workers, url, username="nobody", password="not-the-password")
    idle_threads = 0
    for pid in workers.pids():
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, pid) == 19
        idle_threads += sum(os.sched_getscheduler(int(t.name)) == os.SCHED_IDLE
                            for t in Path(f"/proc/{pid}/task").iterdir())
    assert idle_threads >= 1  # the hash threads


def test_a_login_no_worker_took_up_in_time_is_skipped(url):
    assert check_login(url, "ann", PASSWORD, None, None, take_by=time.time() - 1) == LoginOutcome(retry_after=5)
    assert audit_count(url, "login") == 0  # nobody was logged in behind the "try again"


def test_logins_beyond_the_queue_are_refused_at_once_without_a_hash(url):
    pool = LoginWorkers(processes=0, max_waiting=1)

    async def two_at_once():
        return await asyncio.gather(pool.check(url, "ann", "wrong-password-1", None, None),
                                    pool.check(url, "ann", "wrong-password-2", None, None))
    first, second = asyncio.run(two_at_once())
    assert first == LoginOutcome() and second == LoginOutcome(retry_after=5)
    assert audit_count(url, "login_failed") == 1  # the second was never checked


def test_a_killed_worker_is_replaced_and_the_login_still_answered(url):
    pool = LoginWorkers(processes=1)
    try:
        for started in pool.start():
            started.result(timeout=120)
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert check(pool, url).token is not None
    finally:
        pool.shutdown()


PARENT = """
import time
from storyloop.annotator.login_worker import LoginWorkers
if __name__ == "__main__":
    pool = LoginWorkers(processes=2)
    for started in pool.start():
        started.result(timeout=120)
    print(*pool.pids(), flush=True)
    time.sleep(600)
"""


def test_workers_end_with_a_server_killed_outright(tmp_path: Path):
    script = tmp_path / "server.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(set(pids)) == 2 and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended (its parent, gone, cannot reap it until init does)


def test_bad_pool_sizes_are_refused():
    with pytest.raises(ValueError, match="processes >= 0"):
        LoginWorkers(processes=-1)
    assert login_worker.MAX_WAITING >= 50  # a 50-login burst queues whole: none is refused as busy
