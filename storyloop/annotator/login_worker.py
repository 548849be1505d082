"""Password logins checked in separate low-priority processes, away from the annotators' pages.

Every page run of every annotator shares the server's one Python interpreter. A burst of logins used to
share it too: a request thread per login reading throttle rows, writing failures and audit rows and waiting
on an argon2 hash, each taking turns with the page runs for the interpreter and the cores. So the POST
/login route hands the whole check (throttle, password, failure or new session, audit) to a small pool of
worker processes and only awaits its answer. The workers run at the lowest nice, their argon2 hashes in
Linux's idle scheduling class (db/users.py; no lock is held while hashing), so the logins get the CPU time
the pages leave; a worker holding SQLite's write lock for its few milliseconds of bookkeeping is never
starved outright. The hashes' memory stays inside a fixed number of processes.

The pool is bounded twice: `processes` workers check one login each at a time, and at most `max_waiting`
logins wait for them; a login beyond that is answered at once as throttled, with no hash spent on it (as is
one that no worker took up within ANSWER_WITHIN_S: the worker then skips it, so nobody is logged in behind
a "try again"). A worker that dies is replaced; workers end with the server, even one killed outright.
Workers fork from a fork server started with the pool (before any page runs: Streamlit later replaces the
__main__ module, which a spawned worker would re-run), with this module preloaded.
With `processes=0` the check runs on the server's own threads (the behaviour before this module).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from storyloop.annotator.auth import login, logout
from storyloop.db import session_scope
from storyloop.db.throttle import Throttled
from storyloop.db.users import HASH_NICE, HASH_WAIT_S

# One worker leaves the other cores to the pages: on 2 cores it kept the flood's page p95 lower than two did
# in 6 of 6 paired runs (docs/how-it-works.md), and at ~40 ms a check it still answers 25 logins a second.
LOGIN_WORKERS = 1
MAX_WAITING = 64  # logins queued for a worker; more are refused as busy (the throttle's words)
# a login no worker took up by then (a machine busy with other work) is refused as busy: well under a proxy's
# own timeout (nginx: 60 s), so the browser gets our words
ANSWER_WITHIN_S = 30.0
ATTEMPTS = 2  # a pool whose worker died is replaced once per login


@dataclass(frozen=True)
class LoginOutcome:
    """What a password check came to: a new session's `token`, a refusal (all None), `retry_after` seconds
    of throttling, or a database that did not answer."""

    token: str | None = None
    retry_after: int | None = None
    db_down: bool = False


BUSY = LoginOutcome(retry_after=int(HASH_WAIT_S))


def check_login(db_url: str, username: str, password: str, client: str | None,
                old_token: str | None, take_by: float | None = None) -> LoginOutcome:
    """A password login as the login route makes it: on success the token the browser held before ends
    (rotation). Runs in a worker process, or in a server thread with `processes=0`. Past `take_by` (a
    time.time()) the route has already answered "busy": nothing is checked."""
    if take_by is not None and time.time() > take_by:
        return BUSY
    try:
        with session_scope(db_url) as s:
            result = login(s, username, password, client=client)
            if result is not None:
                logout(s, old_token)
    except Throttled as exc:
        return LoginOutcome(retry_after=exc.seconds)
    except OperationalError:
        return LoginOutcome(db_down=True)
    return LoginOutcome(token=result[0] if result is not None else None)


def _start_worker() -> None:
    """A new worker's setup: the lowest nice (its hash threads then take the idle class), and an end with the
    server."""
    if hasattr(os, "setpriority"):
        os.setpriority(os.PRIO_PROCESS, 0, HASH_NICE)
    threading.Thread(target=_exit_with_parent, name="storyloop-login-parent", daemon=True).start()


def _exit_with_parent() -> None:
    # a server killed outright (kill -9, out of memory) cannot shut its pool down: its workers go with it
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(0)


def _ready() -> int:
    """A no-op a new worker runs once, so that its imports happen before the first real login."""
    return os.getpid()


def _context() -> multiprocessing.context.BaseContext:
    # Not a plain fork: the server has threads (uvicorn, Streamlit's script runners) a fork would copy
    # mid-work. The fork server is one clean process, started at the first call; where there is none, spawn.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class LoginWorkers:
    """The pool the login route checks passwords on (see the module); one per server process."""

    def __init__(self, processes: int = LOGIN_WORKERS, max_waiting: int = MAX_WAITING):
        if processes < 0 or max_waiting < 1:
            raise ValueError("login workers: processes >= 0 and max_waiting >= 1")
        self.processes, self.max_waiting = processes, max_waiting
        self.waiting = 0  # logins submitted and not yet answered (touched on the event loop only)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=_context(), initializer=_start_worker)
            return self._pool

    def start(self) -> list[Future]:
        """Start the fork server and every worker now (about a second), not on the first logins."""
        if not self.processes:
            return []
        pool = self._executor()
        return [pool.submit(_ready) for _ in range(self.processes)]

    def pids(self) -> list[int]:
        """The live workers' process ids (for the tests and the benchmark's memory accounting)."""
        with self._lock:  # the executor keeps no public list of its processes
            return sorted(getattr(self._pool, "_processes", None) or {}) if self._pool is not None else []

    async def check(self, db_url: str, username: str, password: str, client: str | None,
                    old_token: str | None) -> LoginOutcome:
        if self.waiting >= self.max_waiting:
            return BUSY  # a flood beyond the queue: no hash spent
        self.waiting += 1
        try:
            if not self.processes:
                return await asyncio.to_thread(check_login, db_url, username, password, client, old_token)
            take_by = time.time() + ANSWER_WITHIN_S
            for _ in range(ATTEMPTS):
                pool = self._executor()
                try:
                    job = pool.submit(check_login, db_url, username, password, client, old_token, take_by)
                    return await asyncio.wait_for(asyncio.wrap_future(job), max(0.0, take_by - time.time()) + 1)
                except BrokenProcessPool:  # a worker died (killed, out of memory): a new pool, and once more
                    self._drop(pool)
                except TimeoutError:
                    break
            return BUSY
        finally:
            self.waiting -= 1

    def _drop(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:  # (another login may have replaced it already)
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
