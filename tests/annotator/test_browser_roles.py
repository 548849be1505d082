"""Roles in a real Chromium: what an annotator cannot reach, and research writes refused once the role is gone.

An annotator types the URL of every research page (every file of app_pages/ that is not hers) and finds
her own page each time; the navigation offers none of them. A researcher with research tabs open is made
an annotator (`storyloop users set-role`): every research write from those tabs (gold set and clear,
round settings, the export download) is refused and leaves nothing in the database or the audit log. The
same clicks made before, while she was a researcher, are the control: they work and are logged.
(tests/annotator/test_pages.py checks the pages' gating through AppTest; tests/annotator/test_stats.py the
write functions' own role check.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storyloop.annotator import ui
from storyloop.annotator.work_queue import next_task
from storyloop.annotator.submit import submit_task
from storyloop.db import session_scope
from storyloop.db.models import (
    AuditEvent,
    GoldAnswer,
    Judgment,
    Outcome,
    Role,
    Round,
    SkipPolicy,
)
from storyloop.db.users import set_role
from tests.annotator.test_browser import _login, _prompt, browser, served  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

ANNOTATOR_PAGES = {"annotate", "history", "study"}
# Every other page file, with the header it shows: none of them may show to an annotator.
RESEARCH_PAGES = {"rounds": "Rounds", "progress": "Progress", "agreement": "Agreement", "gallery": "Gallery",
                  "export": "Export", "runs": "DPO runs", "study_results": "Study results", "audit": "Audit log"}


def _run_done(page) -> None:
    page.wait_for_function("(d => d.testConnectionState === 'CONNECTED' && d.testScriptState === 'notRunning')"
                           "(document.querySelector('[data-testid=\"stApp\"]').dataset)")


def _actions(url: str) -> list[tuple[str, str | None]]:
    with session_scope(url) as s:
        return [(e.actor, e.action) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def _round_settings(url: str, round_id: int) -> tuple:
    with session_scope(url) as s:
        r = s.get(Round, round_id)
        return r.judgments_per_scenario, r.gold_rate, SkipPolicy(r.skip_policy)


def test_every_page_file_is_classed_as_an_annotators_or_a_research_page():
    files = {p.stem for p in ui.PAGES_DIR.glob("*.py")}
    assert files == ANNOTATOR_PAGES | set(RESEARCH_PAGES), "a new page: say here whether annotators may open it"


def test_an_annotator_reaches_no_research_page_by_typed_url_or_navigation(served, browser):
    from playwright.sync_api import expect

    settings, port, _, rf, _ = served
    url = f"http://127.0.0.1:{port}"
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _run_done(page)
    sections = page.get_by_test_id("stTopNavSection").all_inner_texts()
    assert [s.strip() for s in sections] == ["Annotate", "Studies", "ann"], sections  # no Research, no Admin
    page.get_by_test_id("stTopNavSection").filter(has_text="Studies").click()
    expect(page.get_by_text("Answer a study")).to_be_visible()
    expect(page.get_by_text("Study results")).to_have_count(0)
    page.keyboard.press("Escape")

    for stem, header in RESEARCH_PAGES.items():
        page.goto(f"{url}/{stem}")  # a new session, let in by the login cookie
        _prompt(page, "frame 0: Mia waves")  # her own page (the scenario she holds), not the one asked for
        _run_done(page)
        expect(page.get_by_role("heading", name=header, exact=True)).to_have_count(0)
        expect(page.get_by_test_id("stDownloadButton")).to_have_count(0)
        expect(page.get_by_test_id("stDataFrame")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)

    url_db = settings.db_url
    assert _actions(url_db) == [("ann", "login")]  # nothing exported, no gold, no settings
    assert _round_settings(url_db, rf.round_id) == (2, 0.0, SkipPolicy.others)
    with session_scope(url_db) as s:
        assert s.scalar(select(func.count()).select_from(GoldAnswer)) == 0
        assert s.scalar(select(func.count()).select_from(Judgment)) == 0


def test_research_writes_from_open_tabs_are_refused_once_the_researcher_is_an_annotator(served, browser):
    from playwright.sync_api import expect

    settings, port, _, rf, _ = served
    url, db = f"http://127.0.0.1:{port}", settings.db_url
    s0 = rf.scenarios[0]
    with session_scope(db) as s:  # one judgment to export
        task = next_task(s, rf.users["ann"])
    task.draft.toggle(1), task.draft.advance(), task.draft.advance(), task.draft.toggle(2)
    with session_scope(db) as s:
        submit_task(s, task)
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    first = context.new_page()
    _login(first, url, "rita")
    expect(first.get_by_role("heading", name="Progress", exact=True)).to_be_visible()

    def tab(stem: str, header: str):
        page = context.new_page()
        page.goto(f"{url}/{stem}")
        expect(page.get_by_role("heading", name=header, exact=True)).to_be_visible()
        _run_done(page)
        return page

    def all_bad(page) -> None:
        page.get_by_test_id("stRadio").get_by_text("all bad", exact=True).click()

    # The controls, as a researcher: each write works and is logged once.
    gallery = tab("gallery", "Gallery")  # scenario s0, its form filled from ann's judgment: ranked, #1 best
    gallery.get_by_role("button", name="Save gold").click()
    expect(gallery.get_by_text("Gold answer saved.")).to_be_visible()
    rounds = tab("rounds", "Rounds")
    rounds.get_by_label("Judgments per scenario (k)").fill("3")
    rounds.get_by_role("button", name="Save").click()
    expect(rounds.get_by_text("Saved: k = 3")).to_be_visible()
    export = tab("export", "Export")
    with export.expect_download() as got:
        export.get_by_role("button", name="Download judgments (CSV)").click()
    assert got.value.suggested_filename == "r1-judgments.csv"
    _run_done(rounds), _run_done(export)
    before = _actions(db)
    assert [a for _, a in before if a != "login"] == ["gold_set", "round_settings_changed", "export"]

    # Tabs ready for the next writes: gold on s1 (not judged yet: all bad) to set, s0's to remove, new settings.
    gallery_s1 = tab("gallery", "Gallery")
    gallery_s1.get_by_test_id("stSelectbox").filter(has_text="Scenario").click()
    gallery_s1.get_by_role("option", name="s1 · frame 1: Mia waves").click()
    expect(gallery_s1.get_by_text("scenario s1")).to_be_visible()
    _run_done(gallery_s1)
    all_bad(gallery_s1)
    gallery.reload()
    expect(gallery.get_by_role("button", name="Remove gold")).to_be_enabled()
    _run_done(gallery)
    rounds.get_by_label("Judgments per scenario (k)").fill("5")

    with session_scope(db) as s:  # the admin makes her an annotator
        set_role(s, "rita", Role.annotator, actor="cli:admin")

    downloads = []
    export.on("download", lambda d: downloads.append(d))
    export.get_by_role("button", name="Download judgments (CSV)").click()
    gallery_s1.get_by_role("button", name="Save gold").click()
    gallery.get_by_role("button", name="Remove gold").click()
    rounds.get_by_role("button", name="Save").click()
    for page in (gallery_s1, gallery, rounds):  # each tab: her login has ended, back to the form
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        expect(page.get_by_test_id("stException")).to_have_count(0)
    export.wait_for_timeout(3000)  # time enough for a download to start
    assert downloads == []

    assert _actions(db)[len(before):] == [("cli:admin", "role_changed"), ("cli:admin", "sessions_ended")]
    assert _round_settings(db, rf.round_id) == (3, 0.0, SkipPolicy.others)
    with session_scope(db) as s:
        assert [(g.scenario_id, Outcome(g.outcome)) for g in s.scalars(select(GoldAnswer))] == [(s0, Outcome.ranked)]
