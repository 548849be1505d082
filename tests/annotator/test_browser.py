"""The annotator in a real Chromium: `storyloop annotate` in a subprocess, driven by Playwright.

Judges a scenario with the keyboard, double-clicks submit, reloads, and checks the database holds
exactly one judgment with the right winners and losers; then a second annotator gets the right next
scenario without a trace of the first one's labels. Then keys typed faster than a rerun: every one
counts, in order, and the stored labels are exactly what was typed. Then marks survive a reload and show in
a second tab. Then the server restarts under an open tab: it comes back logged in, with the marks made before
and without replaying the old session's key presses. Then a reload right after logging in, on a slow link:
still logged in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import select

from storyloop.annotator.gold import winners_and_losers
from storyloop.annotator.work_queue import shown_order
from storyloop.db import session_scope, upgrade
from storyloop.db.models import Judgment, Outcome, Role
from storyloop.settings import Settings
from tests.annotator.conftest import PASSWORD, build_round

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STORYLOOP = Path(sys.executable).parent / "storyloop"

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail("Debian's chromium is missing: .ci/run must install it (apt-get install chromium)")
    pytest.skip("no /usr/bin/chromium: apt-get install chromium to run the browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(settings: Settings, port: int, log_path: Path) -> subprocess.Popen:
    """`storyloop annotate` on this port, once its health check answers."""
    log = log_path.open("a")
    proc = subprocess.Popen([str(STORYLOOP), "annotate", "--port", str(port), "--data-dir", str(settings.data_dir),
                             "--db", settings.db_url], stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the annotator did not start:\n" + log_path.read_text())
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def served(tmp_path):
    """A round of two scenarios (three 256² candidates each, k = 2) served by `storyloop annotate`:
    (settings, port, log path, round, [the server process], which a test may stop and start again)."""
    _require_chromium()
    settings = Settings.resolve(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    rf = build_round(settings, tmp_path / "src", scenarios=2, candidates=3, k=2, size=(256, 256))
    port, log_path = _free_port(), tmp_path / "server.log"
    procs = [_serve(settings, port, log_path)]
    yield settings, port, log_path, rf, procs
    _stop(procs[-1])


@pytest.fixture
def server(served):
    settings, port, _, rf, _ = served
    return f"http://127.0.0.1:{port}", rf


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"])
        yield b
        b.close()


def _login(page, url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def _prompt(page, text: str) -> None:
    """Wait until the page shows the scenario with this prompt, and only it (the previous scenario's
    elements linger for a moment while the next one renders)."""
    from playwright.sync_api import expect

    expect(page.locator(".sl-prompt", has_text=text)).to_have_count(1)
    expect(page.locator(".sl-prompt")).to_have_count(1)


def _step(page, title: str) -> None:
    """Wait until the page shows `title` as the current step and its keys are live."""
    from playwright.sync_api import expect

    expect(page.locator(".sl-step.on")).to_have_count(1)  # the previous scenario's elements are gone
    expect(page.locator(".sl-step.on")).to_contain_text(title)
    expect(page.get_by_role("button", name="Next step").or_(page.get_by_role("button", name="Submit"))).to_be_enabled()
    page.wait_for_load_state("networkidle")


def test_keyboard_judgment_double_submit_reload_and_a_second_annotator(server, browser):
    from playwright.sync_api import expect

    url, rf = server
    s0, s1 = rf.scenarios
    ann, bob = rf.users["ann"], rf.users["bob"]
    order = shown_order(rf.candidates[s0], ann, s0, 0)  # the grid ann sees, left to right

    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    hosts = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname))
    _login(page, url, "ann", "not-the-password")
    expect(page.get_by_text("Wrong username or password.")).to_be_visible()

    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("2")  # candidate #2 is not the character of the references
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    page.keyboard.press("Shift+1")  # zoom #1 at full resolution
    expect(page.get_by_text("Candidate 1 · 256×256")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_text("Candidate 1 · 256×256")).to_be_hidden()
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("Enter")
    _step(page, "Aesthetics")
    page.keyboard.press("3")  # #3 is the best of the survivors #1 and #3
    expect(page.locator('[class*="st-key-card-3-best"]')).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "annotator.png"))
    page.get_by_role("button", name="Submit").dblclick()
    _prompt(page, "frame 1: Mia waves")  # ann moves on to s1

    page.reload()  # a new Streamlit session: the login cookie brings ann back to her leased s1
    _prompt(page, "frame 1: Mia waves")
    expect(page.get_by_text("judged by you 1", exact=False)).to_be_visible()

    with session_scope(rf.settings.db_url) as s:
        rows = list(s.scalars(select(Judgment)))
        assert len(rows) == 1
        j = rows[0]
        assert (j.scenario_id, j.user_id, j.revision, j.shown_order) == (s0, ann, 1, order)
        winners, losers = winners_and_losers(j.outcome, j.labels)
        assert winners == {order[2]} and losers == {order[1]}

    # bob: s0 has one of its k = 2 judgments, so it is closest to done; none of ann's labels show
    page2 = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page2, url, "bob")
    _prompt(page2, "frame 0: Mia waves")
    _step(page2, "Character consistency")
    expect(page2.locator('[class*="st-key-card-"][class*="-fail"]')).to_have_count(0)
    expect(page2.locator('[class*="st-key-card-"][class*="-pass"]')).to_have_count(3)
    expect(page2.get_by_text("judged by you 0", exact=False)).to_be_visible()
    expect(page2.get_by_text("Round: 1 of 4 judgments")).to_be_visible()
    page2.wait_for_function("Array.from(document.images).length >= 4 && "
                            "Array.from(document.images).every(i => i.complete)")
    page2.screenshot(path=str(ARTIFACTS / "annotator-second.png"))

    # everything the page loads, the tab's icon included, comes from this server (none from a font CDN)
    icons = page.eval_on_selector_all('link[rel~="icon"]', "links => links.map(l => l.href)")
    assert icons and all(h.startswith(url) or h.startswith("data:") for h in icons), icons
    assert hosts <= {"127.0.0.1", "localhost", None}, hosts

    page.goto(f"{url}/logout")  # the navigation's "Log out": back to the form, and a reload stays out
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def _fast(page, *keys: str) -> None:
    """Type as a quick annotator does: 30 ms between keys, faster than a rerun."""
    for k in keys:
        page.keyboard.press(k)
        page.wait_for_timeout(30)


def test_fast_typing_loses_no_key_and_labels_what_was_typed(server, browser):
    from playwright.sync_api import expect

    url, rf = server
    s0, s1 = rf.scenarios
    ann = rf.users["ann"]
    order = shown_order(rf.candidates[s0], ann, s0, 0)

    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    _fast(page, "1", "Enter", "Enter", "2", "Enter")  # #1 inconsistent, anatomy all fine, #2 best, submit
    _prompt(page, "frame 1: Mia waves")
    _step(page, "Character consistency")
    _fast(page, "s", "2")  # skip: the references are unclear
    expect(page.get_by_text("Nothing left for you to judge")).to_be_visible()

    with session_scope(rf.settings.db_url) as s:
        first, second = s.scalars(select(Judgment).order_by(Judgment.id))
        assert (first.scenario_id, first.outcome) == (s0, Outcome.ranked)
        labels = {first.shown_order.index(l.candidate_id) + 1: (l.consistency_pass, l.anatomy_pass, l.aesthetics_rank)
                  for l in first.labels}
        assert first.shown_order == order
        assert labels == {1: (False, None, None), 2: (True, True, 1), 3: (True, True, None)}
        assert (second.scenario_id, second.outcome) == (s1, Outcome.skipped)
        assert second.skip_reason == "references are unclear"  # the 2 after S picked reason 2


def _press_when_drawn(page, prompt: str, *keys: str) -> None:
    """Press `keys` the moment the browser draws the scenario with `prompt`: in the same task as the drawing,
    before Streamlit hands the keys component its new data (it does that in an effect, after an import)."""
    page.evaluate("""([prompt, keys]) => {
      const shown = () => [...document.querySelectorAll(".sl-prompt")].some((el) => el.textContent.includes(prompt));
      const press = () => keys.forEach((key) => document.dispatchEvent(new KeyboardEvent("keydown", {
        key, code: /^[0-9]$/.test(key) ? "Digit" + key : "Key" + key.toUpperCase(), bubbles: true})));
      const watch = new MutationObserver(() => { if (shown()) { watch.disconnect(); press(); } });
      watch.observe(document.body, {childList: true, subtree: true, characterData: true});
    }""", [prompt, list(keys)])


def test_keys_pressed_as_the_next_scenario_appears_count_for_it(server, browser):
    """A quick annotator's keys right after a submit: the page has drawn the next scenario, its keys component
    still holds the previous one's data for a moment. The presses are for what is on screen."""
    from playwright.sync_api import expect

    url, rf = server
    s0, s1 = rf.scenarios
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    _press_when_drawn(page, "frame 1: Mia waves", "s", "2")
    _fast(page, "a", "Enter")  # all bad: submits
    expect(page.get_by_text("Nothing left for you to judge")).to_be_visible()

    with session_scope(rf.settings.db_url) as s:
        first, second = s.scalars(select(Judgment).order_by(Judgment.id))
        assert (first.scenario_id, first.outcome) == (s0, Outcome.all_bad)
        assert (second.scenario_id, second.outcome, second.skip_reason) == (s1, Outcome.skipped,
                                                                            "references are unclear")


def test_marks_survive_a_reload_and_show_in_a_second_tab(server, browser):
    """The marks on the leased scenario are kept on the lease: a reload, or the same annotator's second tab,
    shows them, and the keys go on from there."""
    from playwright.sync_api import expect

    url, rf = server
    s0, s1 = rf.scenarios
    order = shown_order(rf.candidates[s0], rf.users["ann"], s0, 0)

    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("2")  # #2 inconsistent
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("1")  # #1 bad anatomy
    expect(page.locator('[class*="st-key-card-1-fail"]')).to_be_visible()

    page.reload()
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Anatomical integrity")
    for card in ("1-fail", "2-fail", "3-pass"):
        expect(page.locator(f'[class*="st-key-card-{card}"]')).to_be_visible()
    page.keyboard.press("Enter")  # #3, the only survivor, wins
    _step(page, "Aesthetics")
    expect(page.locator('[class*="st-key-card-3-best"]')).to_be_visible()
    page.keyboard.press("Enter")
    _prompt(page, "frame 1: Mia waves")
    _step(page, "Character consistency")  # the next scenario starts blank
    expect(page.locator('[class*="st-key-card-"][class*="-fail"]')).to_have_count(0)
    page.keyboard.press("3")
    expect(page.locator('[class*="st-key-card-3-fail"]')).to_be_visible()

    second = page.context.new_page()  # the same browser, logged in by the cookie
    second.goto(url)
    _prompt(second, "frame 1: Mia waves")
    _step(second, "Character consistency")
    expect(second.locator('[class*="st-key-card-3-fail"]')).to_be_visible()
    expect(second.locator('[class*="st-key-card-"][class*="-fail"]')).to_have_count(1)

    with session_scope(rf.settings.db_url) as s:
        [j] = s.scalars(select(Judgment))
        labels = {j.shown_order.index(l.candidate_id) + 1: (l.consistency_pass, l.anatomy_pass, l.aesthetics_rank)
                  for l in j.labels}
        assert (j.scenario_id, j.outcome, j.shown_order) == (s0, Outcome.ranked, order)
        assert labels == {1: (True, False, None), 2: (False, None, None), 3: (True, True, 1)}


def _run_done(page) -> None:
    """Wait until the app is connected and no script run is going on."""
    page.wait_for_function("(d => d.testConnectionState === 'CONNECTED' && d.testScriptState === 'notRunning')"
                           "(document.querySelector('[data-testid=\"stApp\"]').dataset)")


def test_a_tab_open_across_a_server_restart_comes_back_logged_in(served, browser):
    """The server restarts under an open tab: the tab's new session is let in by the login cookie and
    shows the page it was on, with the marks stored on the lease; no traceback, and keys work at once
    (the old session's presses do not replay: a replayed 2 would take #2's mark back)."""
    from playwright.sync_api import expect

    settings, port, log_path, rf, procs = served
    url = f"http://127.0.0.1:{port}"

    def restart() -> None:
        _stop(procs.pop())
        procs.append(_serve(settings, port, log_path))

    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("2")
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    # The new session shows what the old one showed, marks and all, so something else must tell when it has
    # run: a zoom open now goes once the new session runs, and then that run ends
    zoom = page.get_by_text("Candidate 1 · 256×256")
    page.keyboard.press("Shift+1")
    expect(zoom).to_be_visible()
    restart()  # the tab reconnects on its own
    error = page.get_by_test_id("stException")
    expect(zoom).to_be_hidden(timeout=60_000)
    _run_done(page)
    expect(error).to_have_count(0)
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()  # the stored mark, not replayed
    _step(page, "Character consistency")
    page.keyboard.press("2")
    expect(page.locator('[class*="st-key-card-2-pass"]')).to_be_visible()

    page.get_by_test_id("stTopNavSection").filter(has_text="Annotate").click()
    page.get_by_text("My judgments").click()
    expect(page.get_by_role("heading", name="My judgments")).to_be_visible()
    restart()
    expect(page.get_by_text("You have not judged anything yet.").or_(error)).to_be_visible(timeout=60_000)
    expect(error).to_have_count(0)
    expect(page.get_by_role("button", name="ann", exact=True)).to_be_visible()  # app.py's navigation, logged in


def test_a_server_killed_right_after_a_submit_keeps_it_once_and_takes_presses_made_while_away(served, browser):
    """kill -9 right after Enter submits: after a restart the judgment is stored exactly once and the tab shows
    the next scenario (the Enter is sent again if it never arrived: the draft on the lease records the last
    press it holds). Then a key pressed while the server is down is applied once it is back, and said so."""
    from playwright.sync_api import expect

    settings, port, log_path, rf, procs = served
    url = f"http://127.0.0.1:{port}"
    s0, s1 = rf.scenarios
    ann = rf.users["ann"]

    def kill() -> None:
        procs[-1].kill()  # SIGKILL: no shutdown, no flush
        procs[-1].wait()

    def start() -> None:
        procs.append(_serve(settings, port, log_path))

    def mine(scenario_id: int) -> list[Judgment]:
        with session_scope(settings.db_url) as s:
            rows = list(s.scalars(select(Judgment).where(Judgment.scenario_id == scenario_id,
                                                          Judgment.user_id == ann)))
            for j in rows:
                j.labels  # loaded while the session is open
            return rows

    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _login(page, url, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.keyboard.press("2")
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("Enter")
    _step(page, "Aesthetics")
    page.keyboard.press("1")
    expect(page.locator('[class*="st-key-card-1-best"]')).to_be_visible()
    page.keyboard.press("Enter")  # submit ...
    kill()  # ... and the server dies at once
    start()
    _prompt_within(page, "frame 1: Mia waves", 60_000)
    [j] = mine(s0)  # exactly once
    order = shown_order(rf.candidates[s0], ann, s0, 0)
    winners, losers = winners_and_losers(j.outcome, j.labels)
    assert winners == {order[0]} and losers == {order[1]}
    expect(page.get_by_test_id("stException")).to_have_count(0)

    _step(page, "Character consistency")
    page.keyboard.press("3")  # a mark the server takes and stores with its draft
    expect(page.locator('[class*="st-key-card-3-fail"]')).to_be_visible()
    page.wait_for_load_state("networkidle")
    kill()
    page.wait_for_timeout(500)
    page.keyboard.press("2")  # pressed while the server is away
    start()
    expect(page.get_by_text("Reconnected: 1 key press made while the server was away applied.")).to_be_visible(
        timeout=60_000)
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    expect(page.locator('[class*="st-key-card-3-fail"]')).to_be_visible()  # the stored mark, not replayed
    page.screenshot(path=str(ARTIFACTS / "annotator-after-kill.png"))
    assert not mine(s1)


def _prompt_within(page, text: str, timeout: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".sl-prompt", has_text=text)).to_have_count(1, timeout=timeout)


def _slow_scripts(page, ms: int = 1000) -> None:
    """A slow link: each of the app's script files arrives `ms` late (Streamlit loads most of its code on
    demand, when an element first needs it)."""
    def late(route):
        page.wait_for_timeout(ms)
        route.continue_()
    page.route("**/static/js/*.js", late)


def _logged_in_shows(page) -> None:
    """Wait for the first frame that shows the login worked (the navigation of a logged-in user)."""
    page.wait_for_function("!!document.querySelector('[data-testid=\"stTopNavSection\"]')", polling="raf")


def test_a_fresh_login_survives_an_immediate_reload_or_navigation(server, browser):
    """The login cookie is in the browser by the time the page shows the login worked, even on a slow link:
    a reload, or a click to another page and a reload, right then keeps the annotator logged in."""
    from playwright.sync_api import expect

    url, rf = server
    for navigate in (False, True):
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        _slow_scripts(page)
        page.goto(url)
        expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.get_by_label("Username").fill("ann")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        _logged_in_shows(page)
        if navigate:
            page.get_by_test_id("stTopNavSection").first.click()
            page.get_by_text("My judgments").click()
        page.reload()
        expect(page.get_by_role("button", name="ann", exact=True)).to_be_visible(timeout=30_000)
        page.unroute_all(behavior="ignoreErrors")
        page.context.close()


@pytest.mark.parametrize("candidates", [3, 8])
def test_every_candidate_fits_a_laptop_window(tmp_path, browser, candidates):
    """At 1280x720 the judging grid shrinks its images rather than push a row of candidates below the fold
    (eight 1024² candidates used to end 60 px under it), and the page's first line clears the header."""
    from playwright.sync_api import expect

    settings = Settings.resolve(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    build_round(settings, tmp_path / "src", scenarios=1, candidates=candidates, k=1, size=(1024, 1024),
                users={"ann": Role.annotator})
    port = _free_port()
    proc = _serve(settings, port, tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        _login(page, f"http://127.0.0.1:{port}", "ann")
        _step(page, "Character consistency")
        cards = page.locator('div[class*="st-key-card-"]')
        expect(cards).to_have_count(candidates)
        expect(cards.locator("img")).to_have_count(candidates)
        page.wait_for_function("[...document.querySelectorAll('div[class*=\"st-key-card-\"] img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        bottom = max(box["y"] + box["height"] for box in (c.bounding_box() for c in cards.all()))
        assert bottom <= 720, f"the last card ends at {bottom:.0f} px, below the 720 px window"
        header = page.get_by_test_id("stHeader").bounding_box()
        assert page.locator(".sl-meta").first.bounding_box()["y"] >= header["y"] + header["height"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"annotate-{candidates}-candidates-1280x720.png"))
    finally:
        _stop(proc)
