"""The login route over HTTP (Starlette's test client, no browser): the cookie it sets and clears, the form's
words and throttling, rotation, the gate, and where a login may send the browser next."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from storyloop.annotator import web
from storyloop.annotator.auth import COOKIE, LOGIN_FAILED, resume
from storyloop.annotator.login_worker import LoginWorkers
from storyloop.db import session_scope
from storyloop.db.models import LoginSession, Role
from storyloop.db.users import add_user, set_active

PASSWORD = "password123"


def make_client(config: web.WebConfig, base_url: str = "http://testserver",
                workers: LoginWorkers | None = None) -> TestClient:
    """The login routes and the gate in front of a stand-in for Streamlit's pages (which answer "app").
    Passwords are checked on the test's threads unless `workers` are given (test_login_worker.py runs the
    processes)."""
    routes = web.routes(config, workers if workers is not None else LoginWorkers(processes=0))
    app = Starlette(routes=[*routes, Route("/{path:path}", lambda r: PlainTextResponse("app"))],
                    middleware=web.middleware())
    return TestClient(app, base_url=base_url, follow_redirects=False)


@pytest.fixture
def url(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", PASSWORD, Role.annotator)
    return migrated_url


@pytest.fixture
def client(url):
    return make_client(web.WebConfig(url))


def post_login(client, username="ann", password=PASSWORD, next_path="/", **headers):
    return client.post("/login", data={"username": username, "password": password, "next": next_path},
                       headers=headers)


def set_cookie(response) -> str:
    [header] = response.headers.get_list("set-cookie")
    return header


def live(url, token) -> bool:
    with session_scope(url) as s:
        return resume(s, token) is not None


def test_a_good_password_gets_an_httponly_strict_cookie_and_goes_on(client, url):
    response = post_login(client, next_path="/history?x=1")
    assert response.status_code == 303 and response.headers["location"] == "/history?x=1"
    header = set_cookie(response)
    attributes = [a.strip() for a in header.split(";")]
    token = attributes[0].removeprefix(f"{COOKIE}=")
    assert {"HttpOnly", "Path=/", "SameSite=strict", "Max-Age=43200"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    assert live(url, token)


def test_secure_over_https_or_when_told(url):
    https = post_login(make_client(web.WebConfig(url), base_url="https://testserver"))
    told = post_login(make_client(web.WebConfig(url, secure_cookie=True)))
    for response in (https, told):
        assert "Secure" in [a.strip() for a in set_cookie(response).split(";")]


def test_wrong_password_and_unknown_user_get_the_same_refusal_and_no_cookie(client):
    for name, password in (("ann", "not-the-password"), ("nobody", PASSWORD)):
        response = post_login(client, name, password)
        assert response.status_code == 401 and "set-cookie" not in response.headers
        assert f'role="alert">{LOGIN_FAILED}<' in response.text
        assert f'value="{name}"' in response.text  # the name stays typed; the password does not
        assert password not in response.text


def test_repeated_wrong_passwords_are_throttled_on_the_route(client):
    for _ in range(3):
        assert post_login(client, password="not-the-password").status_code == 401
    throttled = post_login(client, password="not-the-password")
    assert throttled.status_code == 429 and "Too many login attempts: try again in 2 s." in throttled.text
    assert throttled.headers["retry-after"] == "2"
    right = post_login(client)  # the right password waits its turn too
    assert right.status_code == 429 and "set-cookie" not in right.headers


def test_a_login_rotates_the_token_and_ends_the_one_the_browser_held(client, url):
    first = post_login(client).cookies[COOKIE]
    client.cookies.set(COOKIE, first)
    second = post_login(client).cookies[COOKIE]
    assert second != first and live(url, second) and not live(url, first)


def test_logout_ends_the_session_and_clears_the_cookie(client, url):
    token = post_login(client).cookies[COOKIE]
    client.cookies.set(COOKIE, token)
    response = client.get("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login?m=out"
    header = set_cookie(response)
    assert header.startswith(f'{COOKIE}=""') and "Max-Age=0" in header and "HttpOnly" in header
    assert not live(url, token)
    assert "Logged out." in client.get("/login?m=out").text


def test_a_link_on_another_site_does_not_log_anyone_out(client, url):
    token = post_login(client).cookies[COOKIE]
    client.cookies.set(COOKIE, token)
    response = client.get("/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert "set-cookie" not in response.headers and live(url, token)


def test_a_login_form_posted_from_another_site_is_refused(client):
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        response = post_login(client, **headers)
        assert response.status_code == 403 and "set-cookie" not in response.headers
    assert post_login(client, **{"Sec-Fetch-Site": "same-origin"}).status_code == 303
    assert post_login(client, Origin="http://testserver").status_code == 303


def test_the_form_page_with_a_live_cookie_goes_on_and_with_a_dead_one_clears_it(client, url):
    token = post_login(client).cookies[COOKIE]
    client.cookies.set(COOKIE, token)
    assert client.get("/login?next=/history").headers["location"] == "/history"
    with session_scope(url) as s:
        set_active(s, "ann", False)
    page = client.get("/login?m=ended")
    assert page.status_code == 200 and "Your session has ended; please log in again." in page.text
    assert set_cookie(page).startswith(f'{COOKIE}=""')
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]


def test_every_answer_forbids_other_sites_framing_it_and_the_login_page_keeps_its_strict_policy(client):
    app = client.get("/static/js/index.js")  # Streamlit's answers (here the stand-in's)
    redirect = client.get("/", headers={"Sec-Fetch-Dest": "document"})
    for response in (app, redirect):
        assert {k: response.headers[k] for k in web.APP_HEADERS} == web.APP_HEADERS
    form = client.get("/login")
    assert form.headers.get_list("content-security-policy") == [web.PAGE_HEADERS["Content-Security-Policy"]]
    assert form.headers.get_list("x-frame-options") == ["DENY"]


def test_the_gate_sends_a_page_load_without_a_cookie_to_the_form_and_leaves_the_rest(client):
    document = {"Sec-Fetch-Dest": "document"}
    assert client.get("/", headers=document).headers["location"] == "/login"
    assert client.get("/annotate?round=2", headers=document).headers["location"] == (
        "/login?next=%2Fannotate%3Fround%3D2")
    assert client.get("/history", headers={"Accept": "text/html"}).status_code == 303  # no Sec-Fetch-*: Accept
    for path, headers in (("/_stcore/health", document), ("/static/js/main.js", {"Sec-Fetch-Dest": "script"}),
                          ("/favicon.png", document), ("/history", {"Sec-Fetch-Dest": "empty"}),
                          ("/_stcore/stream", {})):
        assert client.get(path, headers=headers).text == "app", path
    client.cookies.set(COOKIE, "anything")  # a cookie, live or not, gets the app, which checks it
    assert client.get("/", headers=document).text == "app"


@pytest.mark.parametrize("value, expected", [
    ("/history", "/history"), ("/annotate?round=2", "/annotate?round=2"), (None, "/"), ("", "/"),
    ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("history", "/"),
    ("/login", "/"), ("/logout", "/"), ("/login/sso", "/"), ("/a\nb", "/"), ("javascript:alert(1)", "/"),
])
def test_next_stays_on_this_server_and_off_the_login_routes(value, expected):
    assert web.safe_next(value) == expected


def test_the_form_never_echoes_markup(client):
    response = post_login(client, username='"><script>alert(1)</script>', next_path='/"><b>x')
    assert "<script>" not in response.text and "<b>x" not in response.text


def test_a_garbled_or_oversized_form_is_refused(client):
    assert client.post("/login", content=b"x" * (web.MAX_FORM_BYTES + 1),
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    assert client.post("/login", json={"username": "ann"}).status_code == 400


def test_the_secure_setting_is_checked(url):
    assert web.WebConfig.from_env({"STORYLOOP_DB_URL": url, web.SECURE_ENV: "1"}).secure_cookie
    assert not web.WebConfig.from_env({"STORYLOOP_DB_URL": url}).secure_cookie
    with pytest.raises(ValueError, match="STORYLOOP_SECURE_COOKIE='sometimes'"):
        web.WebConfig.from_env({"STORYLOOP_DB_URL": url, web.SECURE_ENV: "sometimes"})


def test_only_the_tokens_hash_is_stored(client, url):
    token = post_login(client).cookies[COOKIE]
    with session_scope(url) as s:
        assert token not in s.scalars(select(LoginSession.token_sha256)).all()


def test_the_login_workers_setting_is_checked(url):
    assert web.WebConfig.from_env({"STORYLOOP_DB_URL": url}).login_workers == 1
    assert web.WebConfig.from_env({"STORYLOOP_DB_URL": url, web.WORKERS_ENV: "0"}).login_workers == 0
    with pytest.raises(ValueError, match="STORYLOOP_LOGIN_WORKERS='two'"):
        web.WebConfig.from_env({"STORYLOOP_DB_URL": url, web.WORKERS_ENV: "two"})
