"""The login session in a real Chromium against `storyloop annotate` (single sign-on off): the cookie the
login route sets is HttpOnly, SameSite=Strict and invisible to page scripts, Secure behind an HTTPS proxy, a
new value at each login and after a role change, cleared at logout, and dead once the account is disabled."""

from __future__ import annotations

import pytest

from storyloop.annotator.auth import COOKIE, resume
from storyloop.db import session_scope, upgrade
from storyloop.db.models import Role
from storyloop.db.users import add_user, set_active, set_role
from storyloop.settings import Settings
from tests.annotator.conftest import PASSWORD
from tests.annotator.test_browser import (
    CHROMIUM,
    _free_port,
    _login,
    _require_chromium,
    _serve,
    _stop,
)

pytestmark = pytest.mark.slow
ENDED = "Your session has ended; please log in again."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, no rounds; an account per test, so that no test's change reaches another."""
    _require_chromium()
    root = tmp_path_factory.mktemp("sessions")
    settings = Settings.resolve(root / "data", f"sqlite:///{root / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as s:
        for name in ("ann", "bob", "cat", "dan", "eve"):
            add_user(s, name, PASSWORD, Role.annotator)
    port = _free_port()
    proc = _serve(settings, port, root / "server.log")
    yield f"http://127.0.0.1:{port}", settings.db_url
    _stop(proc)


@pytest.fixture(scope="module")
def browser(server):
    """One Chromium for the module; each test opens its own contexts (cookie jars)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"])
        yield b
        b.close()


def logged_in(page, username: str) -> None:
    """Wait for the app's navigation of a logged-in `username` (the Streamlit script read the cookie)."""
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name=username, exact=True)).to_be_visible(timeout=30_000)


def session_cookie(context) -> dict | None:
    found = [c for c in context.cookies() if c["name"] == COOKIE]
    return found[0] if found else None


def on_the_form(page, url: str, words: str, query: str = "?m=ended") -> None:
    """Wait until the tab is on the login form (not the app's own notice on its way there), saying `words`."""
    from playwright.sync_api import expect

    page.wait_for_url(f"{url}/login{query}")
    expect(page.locator("p.message")).to_have_text(words)


def live(db_url: str, token: str) -> bool:
    with session_scope(db_url) as s:
        return resume(s, token) is not None


def test_the_cookie_is_httponly_strict_and_page_scripts_never_see_it(server, browser):
    from playwright.sync_api import expect

    url, db_url = server
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)  # no cookie: the gate shows the form before the app loads
    assert page.url == f"{url}/login"
    expect(page.get_by_text("single sign-on")).to_have_count(0)  # SSO off: username and password only
    _login(page, url, "ann", "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    assert session_cookie(context) is None
    _login(page, url, "ann")
    logged_in(page, "ann")
    cookie = session_cookie(context)
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"], cookie["secure"]) == (True, "Strict", "/", False)
    assert live(db_url, cookie["value"])
    for frame in page.frames:  # the app's page and any frame it holds
        seen = frame.evaluate("document.cookie")
        assert COOKIE not in seen and cookie["value"] not in seen
    answers = []
    page.on("response", lambda answer: answers.append(answer))
    page.reload()  # a new Streamlit session, let in by the cookie its websocket carried
    logged_in(page, "ann")
    assert answers and all(a.headers.get("x-frame-options") == "SAMEORIGIN" and  # Streamlit's page, scripts,
                           a.headers.get("x-content-type-options") == "nosniff"  # styles: none framed elsewhere
                           for a in answers if a.url.startswith(url)), [a.url for a in answers]
    context.close()


def test_behind_an_https_proxy_the_cookie_is_secure(server, browser):
    url, _ = server
    context = browser.new_context(extra_http_headers={"X-Forwarded-Proto": "https"})  # as the proxy says
    page = context.new_page()
    _login(page, url, "bob")
    page.wait_for_url(f"{url}/")
    cookie = session_cookie(context)
    assert cookie is not None and (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Strict")
    context.close()


def test_each_login_and_a_role_change_give_a_new_token(server, browser):
    from playwright.sync_api import expect

    url, db_url = server
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE, "value": "planted-by-someone-else", "url": url}])
    page = context.new_page()
    _login(page, url, "cat")
    logged_in(page, "cat")
    first = session_cookie(context)["value"]
    assert first != "planted-by-someone-else" and live(db_url, first)

    with session_scope(db_url) as s:
        set_role(s, "cat", Role.researcher)  # ends cat's logins: the old token must not carry the new rights
    page.reload()
    on_the_form(page, url, ENDED)
    assert session_cookie(context) is None  # the form cleared the dead cookie
    page.get_by_label("Username").fill("cat")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    logged_in(page, "cat")
    expect(page.get_by_role("heading", name="Progress")).to_be_visible()  # a researcher now
    second = session_cookie(context)["value"]
    assert second != first and live(db_url, second) and not live(db_url, first)
    context.close()


def test_logout_ends_the_session_and_clears_the_cookie(server, browser):
    from playwright.sync_api import expect

    url, db_url = server
    context = browser.new_context()
    page = context.new_page()
    _login(page, url, "dan")
    logged_in(page, "dan")
    token = session_cookie(context)["value"]
    page.get_by_role("button", name="dan", exact=True).click()
    page.get_by_text("Log out dan").click()  # the app's own Log out: through /logout, which clears the cookie
    on_the_form(page, url, "Logged out.", "?m=out")
    assert session_cookie(context) is None and not live(db_url, token)
    page.goto(url)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    context.close()


def test_a_disabled_accounts_cookie_stops_working_even_copied_elsewhere(server, browser):
    from playwright.sync_api import expect

    url, db_url = server
    context = browser.new_context()
    page = context.new_page()
    _login(page, url, "eve")
    logged_in(page, "eve")
    token = session_cookie(context)["value"]
    with session_scope(db_url) as s:
        set_active(s, "eve", False)
    page.reload()  # the app finds the session ended and sends the tab to the form
    on_the_form(page, url, ENDED)
    assert session_cookie(context) is None
    other = browser.new_context()  # the token copied into another browser
    other.add_cookies([{"name": COOKIE, "value": token, "url": url}])
    stolen = other.new_page()
    stolen.goto(url)
    on_the_form(stolen, url, ENDED)
    expect(stolen.get_by_role("button", name="eve", exact=True)).to_have_count(0)
    context.close()
    other.close()
