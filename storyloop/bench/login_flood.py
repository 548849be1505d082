"""A burst of wrong logins against a running annotator: does a logged-in annotator's page stay quick, and
does the server's memory stay bounded?

`storyloop annotate` runs in a subprocess on a fresh data directory (one scenario of 8 candidates of 1024²,
as the page benchmark). A logged-in annotator's judging page is run over and over, first quietly, then
while `logins` clients, each from its own address (X-Forwarded-For, as behind a proxy) and under its own
unknown name, send a wrong password at the same moment: the throttle cannot help (every name and address
is new), only the bound on concurrent password hashes does.

Each login takes the app's real path: the POST /login route where the server has one, else the login
form of the app itself, submitted over Streamlit's websocket as a browser does (bench/st_client.py). The
annotator's page runs over that websocket too, with her session cookie.

Page times are those of the annotator's runs that started while a burst was in flight; bursts repeat
until `min_samples` runs were timed (four bursts at least). Memory is the peak resident size (VmHWM) of the
server and every process under it (the login workers that check the passwords, multiprocessing's resource
tracker), summed, before the bursts and after each: bounded when the later half of the bursts does not raise
it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlparse

import numpy as np

from storyloop.bench.st_client import AppSession

CLIENT_HEADER = "X-Forwarded-For"
WRONG_PASSWORD = "not-the-password-123"
MIN_BURSTS = 4  # the peak is bounded if the later half of the bursts does not raise it
BOUNDED_SLACK_MB = 16  # ... by more than this (a new allocator arena now and then)
LOGIN_FAILED_START = "Wrong username or password"
THROTTLED_START = "Too many login attempts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir: Path, db_url: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`storyloop annotate` on a free port, once its health check answers; (process, base URL)."""
    port = _free_port()
    env = {**os.environ, "STORYLOOP_CLIENT_HEADER": CLIENT_HEADER}
    with log_path.open("a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "storyloop.cli.main", "annotate", "--port", str(port),
                                 "--data-dir", str(data_dir), "--db", db_url],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the annotator did not start:\n" + log_path.read_text()[-3000:]) from None
            time.sleep(0.2)


def _status_mb(pid: int, field: str) -> float | None:
    """A size from /proc/PID/status in MiB (VmHWM: peak resident, VmRSS: now); None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """The processes under `pid` (Linux), children first."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [d for child in found for d in _descendants(child)]


def _tree_peak_mb(pid: int) -> tuple[float | None, float | None]:
    """(the server's peak resident MiB, the sum of its descendants' peaks); None off Linux."""
    server = _status_mb(pid, "VmHWM")
    if server is None:
        return None, None
    return server, sum(_status_mb(child, "VmHWM") or 0.0 for child in _descendants(pid))


def _outcome(run) -> str:
    """What the app's own login form answered."""
    alerts = run.alerts()
    if any(a.startswith(LOGIN_FAILED_START) for a in alerts):
        return "refused"
    if any(a.startswith(THROTTLED_START) for a in alerts):
        return "throttled"
    if not any(e.text == "Log in" for e in run.elements):
        return "let_in"
    return "unanswered"


def _has_login_route(base_url: str) -> bool:
    """Whether the server answers GET /login with a password form of its own (else Streamlit serves its app
    for any path, and the login form is the app's)."""
    with urllib.request.urlopen(f"{base_url}/login", timeout=30) as answer:
        return b'name="password"' in answer.read()


class _FormLogins:
    """The app's own login form: each client is a tab that has loaded the login page."""

    def __init__(self, base_url: str, addresses: list[str]):
        self.base_url, self.addresses = base_url, addresses

    async def prepare(self) -> None:
        self.tabs = await asyncio.gather(*(AppSession.open(self.base_url, {CLIENT_HEADER: a})
                                           for a in self.addresses))
        forms = await asyncio.gather(*(tab.run() for tab in self.tabs))
        self.ids = forms[0].widget("Username"), forms[0].widget("Password"), forms[0].widget("Log in")

    async def send(self, names: list[str]) -> list[str]:
        user, password, button = self.ids
        runs = await asyncio.gather(*(tab.run({user: name, password: WRONG_PASSWORD}, (button,))
                                      for tab, name in zip(self.tabs, names)))
        await asyncio.gather(*(tab.close() for tab in self.tabs))
        return [_outcome(run) for run in runs]


async def _post_login_async(host: str, port: int, base_url: str, username: str, address: str) -> str:
    """POST /login as the login page's form does, over its own connection (no redirect followed); what it
    answered."""
    body = urlencode({"username": username, "password": WRONG_PASSWORD, "next": "/"}).encode()
    head = (f"POST /login HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n{CLIENT_HEADER}: {address}\r\nOrigin: {base_url}\r\n"
            f"Sec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = (await asyncio.wait_for(reader.readline(), 120)).split()
    finally:
        writer.close()
        await writer.wait_closed()
    if len(status_line) < 2:
        return "unanswered"
    status = int(status_line[1])
    return {401: "refused", 429: "throttled", 303: "let_in"}.get(status, f"http {status}")


def _post_logins(base_url: str, names: list[str], addresses: list[str]) -> list[str]:
    """Every login at once, each on its own connection (run in the attackers' process): one event loop, as
    a load tool would send them, so that the attackers' own work stays small beside the server's."""
    url = urlparse(base_url)

    async def flood() -> list[str]:
        return list(await asyncio.gather(*(_post_login_async(url.hostname, url.port, base_url, name, address)
                                           for name, address in zip(names, addresses))))
    return asyncio.run(flood())


class _RouteLogins:
    """The server's POST /login route: each client posts the form once, from the attackers' process.

    The attackers run in a process of their own, as they would on other machines: sharing this process's
    interpreter with the annotator's client, fifty sending threads slowed the client's reading of her own
    page, and the benchmark timed that as the server's delay."""

    def __init__(self, base_url: str, addresses: list[str], attackers: ProcessPoolExecutor):
        self.base_url, self.addresses, self.attackers = base_url, addresses, attackers

    async def prepare(self) -> None:
        pass

    async def send(self, names: list[str]) -> list[str]:
        return await asyncio.wrap_future(self.attackers.submit(_post_logins, self.base_url, names, self.addresses))


async def _burst(base_url: str, annotator: AppSession, logins: int, burst: int,
                 attackers: ProcessPoolExecutor | None) -> tuple[list[float], Counter]:
    """`logins` clients send a wrong login at once while the annotator's page runs; (page ms of the runs
    started during the burst, outcomes of the logins)."""
    addresses = [f"198.18.{burst}.{i + 1}" for i in range(logins)]
    clients = _RouteLogins(base_url, addresses, attackers) if attackers else _FormLogins(base_url, addresses)
    await clients.prepare()  # (a browser loads the login page before anyone types)
    flood = asyncio.ensure_future(clients.send([f"flood-{burst}-{i}" for i in range(logins)]))
    times = []
    while not flood.done():
        times.append((await annotator.run()).ms)
    return times, Counter(await flood)


async def _measure(base_url: str, pid: int, cookie: str, candidates: int, logins: int, quiet_runs: int,
                   min_samples: int, max_bursts: int, log) -> dict:
    from storyloop.annotator.auth import COOKIE

    route = await asyncio.to_thread(_has_login_route, base_url)
    attackers = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) if route else None
    if attackers is not None:
        await asyncio.wrap_future(attackers.submit(os.getpid))  # started (and its imports done) before timing
    annotator = await AppSession.open(base_url, {"Cookie": f"{COOKIE}={cookie}", CLIENT_HEADER: "198.18.255.1"})
    first = await annotator.run()
    images = sum(e.kind == "imgs" for e in first.elements)
    if images != candidates + 1:
        raise RuntimeError(f"the annotator's judging page did not render (images: {images}; {first.alerts()})")
    for _ in range(3):  # warm: thumbnails cached, as in the page benchmark
        await annotator.run()
    quiet = [(await annotator.run()).ms for _ in range(quiet_runs)]
    base_server, base_workers = _tree_peak_mb(pid)
    base_mb = base_server + base_workers if base_server is not None else None
    during: list[float] = []
    outcomes: Counter = Counter()
    bursts = 0
    peaks = []  # after each burst: a peak that stops growing is bounded
    began = time.perf_counter()
    server_mb = workers_mb = None
    try:
        while bursts < max_bursts and (bursts < MIN_BURSTS or len(during) < min_samples):
            times, got = await _burst(base_url, annotator, logins, bursts, attackers)
            during += times
            outcomes += got
            bursts += 1
            server_mb, workers_mb = _tree_peak_mb(pid)
            peaks.append(server_mb + workers_mb if server_mb is not None else None)
            log(f"  burst {bursts}: {logins} wrong logins ({dict(got)}), {len(times)} page runs meanwhile, "
                f"peak {peaks[-1] or 0:.0f} MB")
    finally:
        if attackers is not None:
            attackers.shutdown()
    seconds = time.perf_counter() - began
    after_mb = peaks[-1]
    await annotator.close()
    if not during:
        raise RuntimeError("no page run overlapped a burst")
    return {"login_path": "POST /login" if route else "login form (websocket)", "logins_per_burst": logins,
            "bursts": bursts, "seconds": seconds, "outcomes": dict(outcomes),
            "page_runs": len(during), "page_ms_p50": statistics.median(during),
            "page_ms_p95": float(np.percentile(during, 95)), "page_ms_max": max(during),
            "quiet_page_ms_p50": statistics.median(quiet), "quiet_page_ms_p95": float(np.percentile(quiet, 95)),
            "base_peak_mb": base_mb, "peak_mb": after_mb, "server_peak_mb": server_mb,
            "login_workers_peak_mb": workers_mb, "peak_mb_by_burst": peaks,
            "growth_mb": after_mb - base_mb if after_mb is not None and base_mb is not None else None,
            "peak_bounded": after_mb is not None and after_mb - peaks[(bursts - 1) // 2] <= BOUNDED_SLACK_MB}


def login_flood(db_url: str, workdir: Path, logins: int = 50, min_samples: int = 30, max_bursts: int = 6,
                quiet_runs: int = 20, candidates: int | None = None, px: int | None = None, log=print) -> dict:
    """Serve a fresh data directory on `db_url` (an empty database), flood it, and report (see the module)."""
    from storyloop.annotator.auth import login
    from storyloop.bench import annotator as page_bench
    from storyloop.db import session_scope, upgrade
    from storyloop.db.models import Role
    from storyloop.db.users import add_user
    from storyloop.settings import Settings

    candidates = candidates or page_bench.PAGE_CANDIDATES
    px = px or page_bench.PAGE_PX
    settings = Settings.resolve(workdir / "flood-data", db_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    page_bench._round(settings, workdir / "flood-src", "flood", 1, candidates, px)
    with session_scope(db_url) as s:
        add_user(s, "bench", page_bench.PASSWORD, Role.annotator)
    with session_scope(db_url) as s:  # the annotator's login, as the login path makes it: the cookie's token
        cookie, _ = login(s, "bench", page_bench.PASSWORD)
    log("  starting `storyloop annotate` ...")
    proc, base_url = _serve(settings.data_dir, db_url, workdir / "flood-server.log")
    try:
        result = asyncio.run(_measure(base_url, proc.pid, cookie, candidates, logins, quiet_runs, min_samples,
                                      max_bursts, log))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["db"] = "postgresql" if db_url.startswith("postgres") else "sqlite"
    return result
