"""`storyloop bench annotator`: how fast the judging page is built, and how many judgments the DB takes.

Page: a scenario with 8 candidates of 1024² (and one 1024² reference), judged by a logged-in
annotator. Each sample is one full server-side run of the annotate page through Streamlit's AppTest:
login check, lease renewal, scenario and thumbnails (cached after the first run), progress counts,
and every element the page sends. The first, cold run (thumbnails made from the PNGs) is reported apart.

Login flood (bench/login_flood.py): the same page, served by `storyloop annotate`, run by a logged-in
annotator while bursts of 50 wrong logins arrive at once; its p95 and the server's peak memory.

Writes: 20 writer processes, each an annotator submitting one judgment per scenario through the app's
own submit path (`submit_task`), every 10th sent twice (a double click). Afterwards every expected
(annotator, scenario) must have exactly one judgment: `lost` counts the missing ones, `duplicates`
the extra ones.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

PAGE_CANDIDATES = 8
PAGE_PX = 1024
SCENARIO_CANDIDATES = 3  # per scenario in the write benchmark
PASSWORD = "bench-password-123"


# -- fixtures built in code --------------------------------------------------------------------------

def _image(path: Path, seed: int, px: int) -> Path:
    """A smooth image with some noise: compresses like a generated frame, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:px, 0:px] / px
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y + seed / 3), np.sin(4 * (x + y) + seed / 7)], -1)
    pixels = ((base + 1) * 110 + rng.normal(0, 8, (px, px, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _round(settings, src: Path, name: str, scenarios: int, candidates: int, px: int) -> None:
    from storyloop.db import session_scope
    from storyloop.db.rounds import create_round

    src.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(scenarios):
        ref = _image(src / f"s{s}-ref.png", 10_000 + s, px)
        cands = [_image(src / f"s{s}-c{c}.png", 100 * s + c, px) for c in range(candidates)]
        lines.append({"id": f"s{s}", "story_id": "bench", "frame_index": s, "prompt": f"frame {s} of the bench",
                      "references": [ref.name], "candidates": [c.name for c in cands]})
    (src / "s.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, name, src / "s.jsonl", judgments_per_scenario=3)


# -- the judging page ------------------------------------------------------------------------------

def page_build_ms(workdir: Path, runs: int = 50) -> dict:
    """Median / p95 ms of a full annotate-page run with thumbnails cached, and the cold first run."""
    import logging

    from sqlalchemy import select
    from streamlit.testing.v1 import AppTest

    import storyloop.annotator
    from storyloop.annotator import ui
    from storyloop.annotator.auth import login
    from storyloop.db import session_scope, upgrade
    from storyloop.db.models import Lease, Role
    from storyloop.db.users import add_user
    from storyloop.settings import Settings

    # Never the user's own database: the data dir and SQLite file live in `workdir`.
    settings = Settings(workdir / "page", f"sqlite:///{workdir / 'page' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    _round(settings, workdir / "page-src", "page", 1, PAGE_CANDIDATES, PAGE_PX)
    with session_scope(settings.db_url) as s:
        add_user(s, "bench", PASSWORD, Role.annotator)
    os.environ["STORYLOOP_DATA_DIR"], os.environ["STORYLOOP_DB_URL"] = str(settings.data_dir), settings.db_url
    at = AppTest.from_file(str(Path(storyloop.annotator.__file__).parent / "app.py"), default_timeout=120).run()
    # AppTest runs the script in this thread, and Streamlit (which configured its loggers just now)
    # warns about that on every run: noise in a benchmark's output.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True
    with session_scope(settings.db_url) as s:  # logged in as the login route does it, minus the cookie
        at.session_state[ui.TOKEN] = login(s, "bench", PASSWORD)[0]
    started = time.perf_counter()
    at.run()  # first page: queue, lease, thumbnails
    cold_ms = (time.perf_counter() - started) * 1e3
    if len(at.image) != PAGE_CANDIDATES + 1 or at.exception:
        raise RuntimeError(f"the judging page did not render its images: {at.exception}")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - started) * 1e3)
    # A mark: candidate 1's button flips it, so every click changes the draft and stores it on the lease.
    marks = []
    for _ in range(runs):
        button = next(b for b in at.button if b.key and b.key.startswith("toggle-") and b.key.endswith("-1"))
        started = time.perf_counter()
        button.click().run()
        marks.append((time.perf_counter() - started) * 1e3)
    with session_scope(settings.db_url) as s:  # each click was stored: an odd count leaves #1 failed
        [draft] = s.scalars(select(Lease.draft)).all()
    if len((draft or {}).get("consistency_fail", [])) != runs % 2:
        raise RuntimeError(f"the marks did not reach the lease: {draft}")
    return {"page_ms_p50": statistics.median(times), "page_ms_p95": float(np.percentile(times, 95)),
            "page_ms_cold": cold_ms, "page_runs": runs,
            "mark_ms_p50": statistics.median(marks), "mark_ms_p95": float(np.percentile(marks, 95))}


# -- concurrent writers ----------------------------------------------------------------------------

def _writer(url: str, user_id: int, scenario_candidates: list[tuple[int, list[int]]], start) -> tuple[int, int, str]:
    """Submit one judgment per scenario as `user_id`; returns (created, no-op resubmits, error)."""
    from storyloop.annotator.work_queue import Task
    from storyloop.annotator.submit import submit_task
    from storyloop.db import session_scope
    from storyloop.db.engine import get_engine

    with get_engine(url).connect():
        pass  # connect before the clock starts
    start.wait()
    created = repeats = 0
    try:
        for i, (sid, cands) in enumerate(scenario_candidates):
            task = Task(sid, user_id, 0, 0, cands, datetime.now(timezone.utc))
            task.draft.toggle(1)  # one inconsistent candidate,
            task.draft.advance(), task.draft.advance()
            task.draft.toggle(2)  # the next one best
            with session_scope(url) as s:
                created += submit_task(s, task).created
            if i % 10 == 0:  # a double click: the same task again
                with session_scope(url) as s:
                    repeats += not submit_task(s, task).created
    except Exception as exc:  # reported, and counted as lost judgments by the check
        return created, repeats, f"{type(exc).__name__}: {exc}"
    return created, repeats, ""


def judgments_per_second(url: str, workdir: Path, writers: int = 20, per_writer: int = 100) -> dict:
    """Throughput of `writers` processes submitting `per_writer` judgments each, and the loss check."""
    from sqlalchemy import func, select

    from storyloop.db import session_scope, upgrade
    from storyloop.db.models import Judgment, Role, Scenario, User
    from storyloop.settings import Settings

    settings = Settings.resolve(workdir, url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    _round(settings, workdir / "src", "writes", per_writer, SCENARIO_CANDIDATES, 16)
    with session_scope(url) as s:
        hash_ = _bench_hash()
        users = [User(username=f"writer{i:02d}", password_hash=hash_, role=Role.annotator) for i in range(writers)]
        s.add_all(users)
        s.flush()
        user_ids = [u.id for u in users]
        scenarios = [(sc.id, [c.id for c in sc.candidates]) for sc in s.scalars(select(Scenario).order_by(Scenario.id))]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(writers + 1)
        with ctx.Pool(writers) as pool:
            # Each writer walks the scenarios from its own offset, so they meet on the same rows.
            jobs = [pool.apply_async(_writer, (url, uid, scenarios[i * 7 % len(scenarios):] +
                                               scenarios[:i * 7 % len(scenarios)], start))
                    for i, uid in enumerate(user_ids)]
            start.wait()
            began = time.perf_counter()
            results = [j.get() for j in jobs]
            seconds = time.perf_counter() - began
    errors = [e for _, _, e in results if e]
    with session_scope(url) as s:
        per_pair = {(uid, sid): n for uid, sid, n in s.execute(
            select(Judgment.user_id, Judgment.scenario_id, func.count())
            .group_by(Judgment.user_id, Judgment.scenario_id)).all()}
    expected = {(uid, sid) for uid in user_ids for sid, _ in scenarios}
    lost = len(expected - set(per_pair))
    duplicates = sum(n - 1 for n in per_pair.values())
    created = sum(c for c, _, _ in results)
    return {"judgments_per_s": created / seconds, "judgments": created, "seconds": seconds,
            "double_clicks_absorbed": sum(r for _, r, _ in results), "lost": lost, "duplicates": duplicates,
            "errors": errors[:3]}


def _bench_hash() -> str:
    from storyloop.db.users import hash_password

    return hash_password(PASSWORD)


def _postgres_database(admin_url: str):
    """A fresh database on the server behind `admin_url`, and a function that drops it."""
    from sqlalchemy import create_engine, text

    from storyloop.db.engine import get_engine, normalize_url

    admin_url = normalize_url(admin_url)
    name = f"storyloop_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return url, drop


def run_annotator_bench(pg_url: str | None, writers: int = 20, per_writer: int = 100, page_runs: int = 50,
                        flood_logins: int = 50, log=print) -> dict:
    from storyloop.bench.login_flood import login_flood

    result: dict = {"writers": writers, "per_writer": per_writer}
    with tempfile.TemporaryDirectory(prefix="storyloop-bench-") as tmp:
        tmp = Path(tmp)
        log(f"judging page: {PAGE_CANDIDATES} candidates of {PAGE_PX}², {page_runs} runs ...")
        result.update(page_build_ms(tmp, page_runs))
        backends = {"sqlite": f"sqlite:///{tmp / 'sqlite-data' / 'storyloop.db'}"}
        drops = []
        if pg_url:
            url, drop = _postgres_database(pg_url)
            backends["postgresql"] = url
            drops.append(drop)
        try:
            writes = {}
            for name, url in backends.items():
                log(f"{name}: {writers} writers x {per_writer} judgments ...")
                writes[name] = judgments_per_second(url, tmp / f"{name}-data", writers, per_writer)
            # on the team server's database when there is one
            flood_url = f"sqlite:///{tmp / 'flood.db'}"
            if pg_url:
                flood_url, drop = _postgres_database(pg_url)
                drops.append(drop)
            log(f"login flood: bursts of {flood_logins} wrong logins against `storyloop annotate` ...")
            flood = login_flood(flood_url, tmp, logins=flood_logins, log=log)
        finally:
            for drop in drops:
                drop()
    result["judgments_per_s"] = {name: w["judgments_per_s"] for name, w in writes.items()}
    if "postgresql" not in writes:
        result["judgments_per_s"]["postgresql"] = None
        result["note"] = "no PostgreSQL URL given (--pg-url or STORYLOOP_TEST_PG_URL): PostgreSQL not measured"
    result["lost"] = sum(w["lost"] for w in writes.values())
    result["duplicates"] = sum(w["duplicates"] for w in writes.values())
    result["writes"] = writes
    result["login_flood_page_ms_p95"] = flood["page_ms_p95"]
    result["login_flood_peak_mb"] = flood["peak_mb"]
    result["login_flood"] = flood
    pg = result["judgments_per_s"]["postgresql"]
    result["targets_met"] = {"page_ms_p95<=150": result["page_ms_p95"] <= 150,
                             "postgresql>=200/s": pg is not None and pg >= 200,
                             "lost==0": result["lost"] == 0, "duplicates==0": result["duplicates"] == 0,
                             "login_flood_page_ms_p95<=150": flood["page_ms_p95"] <= 150,
                             "login_flood_peak_bounded": flood["peak_bounded"]}
    return result
