"""The login route in front of the annotator: the one place the session cookie is set and cleared.

Streamlit talks to the browser over a websocket and cannot answer with a Set-Cookie header; page
JavaScript can write a cookie, but then page scripts can read it too. So the login is an ordinary HTTP
form served by routes of the same server (`st.App(routes=...)`, storyloop.annotator.server): a good
password is answered with

    Set-Cookie: storyloop_session=<token>; HttpOnly; SameSite=Strict; Path=/; Max-Age=...[; Secure]

and a redirect to the app. The Streamlit script still reads the cookie (`st.context.cookies`, from the
websocket's handshake); page scripts never see it. Secure is added when the request came over HTTPS
(uvicorn reads X-Forwarded-Proto from the proxies FORWARDED_ALLOW_IPS trusts, 127.0.0.1 by default) or
always with STORYLOOP_SECURE_COOKIE=1.

Routes: GET /login (the form; a live session goes straight on; an identity back from single sign-on is
turned into a session), POST /login (the password check, throttled, on separate low-priority processes so
that a flood of logins does not slow the pages: storyloop.annotator.login_worker), GET|POST /logout,
GET /login/sso (to the identity provider). `LoginGate` sends a page load without a session cookie to
the form at once, before the app loads. `SecurityHeaders` puts the headers every answer should carry on
Streamlit's pages, scripts and images too (`middleware()` is the stack the server runs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlparse

from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from storyloop.annotator import login_page, sso
from storyloop.annotator.auth import (
    COOKIE,
    LOGIN_FAILED,
    MAX_AGE,
    SSO_UNKNOWN,
    client_address,
    login_by_email,
    logout,
    resume,
)
from storyloop.annotator.login_worker import LOGIN_WORKERS, LoginOutcome, LoginWorkers
from storyloop.db import session_scope
from storyloop.db.throttle import Throttled
from storyloop.settings import DB_URL_ENV, Settings

SECURE_ENV = "STORYLOOP_SECURE_COOKIE"
WORKERS_ENV = "STORYLOOP_LOGIN_WORKERS"
MAX_FORM_BYTES = 8 * 1024  # a username, a password and a path: anything longer is not our form
# ?m= on /login: what the form says above itself (fixed words, never text from the URL)
DB_DOWN = "The database is not answering (it may be restarting): try again in a moment."
NOTICES = {"out": "Logged out.", "ended": "Your session has ended; please log in again."}
SSO_UNVERIFIED = "Your identity provider has not verified the e-mail address {email}: storyloop cannot use it."
# The login page allows nothing but its own form: no script, no framing (clickjacking), posts to itself only.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Every other answer (Streamlit's pages, scripts, images): no framing by another site, no MIME sniffing, no
# address sent off the site. Streamlit's page needs its scripts, styles and its own iframes, so the strict
# policy stays the login page's.
APP_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class WebConfig:
    """What the login routes need: the database, the cookie's Secure rule, single sign-on if on."""

    db_url: str
    secure_cookie: bool = False  # Secure on every cookie, HTTPS seen or not (a proxy that sends no X-Forwarded-Proto)
    sso: sso.SsoSettings | None = None
    login_workers: int = LOGIN_WORKERS  # processes that check passwords (0: the server's own threads)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ,
                 auth_section: Mapping | None = None) -> WebConfig:
        """From the environment `storyloop annotate` sets; raises ValueError on a bad setting."""
        flag = env.get(SECURE_ENV, "").strip().lower()
        if flag not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"{SECURE_ENV}={env[SECURE_ENV]!r}: use 1 (always Secure) or 0 (Secure over HTTPS)")
        workers = env.get(WORKERS_ENV, "").strip() or str(LOGIN_WORKERS)
        if not (workers.isascii() and workers.isdigit()):
            raise ValueError(f"{WORKERS_ENV}={env[WORKERS_ENV]!r}: use a whole number of processes (0: check passwords in the server's own threads)")
        return cls(env.get(DB_URL_ENV) or Settings.resolve().db_url, flag in ("1", "true", "yes"),
                   sso.sso_settings(env, auth_section), int(workers))


def load_config(env: Mapping[str, str] = os.environ) -> WebConfig:
    """The server's settings from `env` and Streamlit's secrets.toml, checked: ValueError says what is wrong
    (a half-set single sign-on, Authlib missing for it, a bad STORYLOOP_SECURE_COOKIE)."""
    config = WebConfig.from_env(env, sso.streamlit_auth_section())
    if config.sso is not None:
        sso.require_authlib()
    return config


def safe_next(value: str | None) -> str:
    """A path on this server to go on to after the login; anything else (another host, a scheme, the login
    routes themselves) becomes /."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 for c in value) or urlparse(value).netloc:
        return "/"
    path = urlparse(value).path
    if path in ("/login", "/logout") or path.startswith("/login/"):
        return "/"
    return value


def _secure(request: Request, config: WebConfig) -> bool:
    return config.secure_cookie or request.url.scheme == "https"


def set_session_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(COOKIE, token, max_age=int(MAX_AGE.total_seconds()), path="/", secure=secure,
                        httponly=True, samesite="strict")


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")


def _client(request: Request) -> str | None:
    return client_address(request.headers, request.client.host if request.client else None)


def _cross_site(request: Request) -> bool:
    """A form post from another site (login CSRF: logging someone into the attacker's account)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "cross-site"
    origin = request.headers.get("origin")  # older browsers: compare the Origin with the host asked for
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    return bool(origin) and origin != "null" and urlparse(origin).netloc != host


def _page(config: WebConfig, status: int = 200, **fields) -> HTMLResponse:
    label = config.sso.label if config.sso is not None else None
    return HTMLResponse(login_page.render(sso_label=label, **fields), status_code=status, headers=PAGE_HEADERS)


def _go(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def _live(config: WebConfig, token: str | None) -> bool:
    if not token:
        return False
    with session_scope(config.db_url) as s:
        return resume(s, token) is not None


def _forget_identity(request: Request, response: Response) -> None:
    """Drop Streamlit's single sign-on identity: it has become a storyloop session (or was refused)."""
    for name in sso.identity_cookie_names(request.cookies):
        response.delete_cookie(name, path="/")


def _sso_login(request: Request, config: WebConfig, identity: sso.Identity, next_path: str) -> Response:
    secure = _secure(request, config)
    if identity.email_verified is False:
        response = _page(config, 403, error=SSO_UNVERIFIED.format(email=identity.email), next_path=next_path)
    else:
        with session_scope(config.db_url) as s:
            result = login_by_email(s, identity.email, client=_client(request))
            if result is not None:
                logout(s, request.cookies.get(COOKIE))  # rotation: a token this browser held before ends
        if result is None:
            response = _page(config, 403, error=SSO_UNKNOWN.format(email=identity.email), next_path=next_path)
        else:
            response = _go(next_path)
            set_session_cookie(response, result[0], secure)
    _forget_identity(request, response)
    return response


def login_form(request: Request, config: WebConfig) -> Response:
    """GET /login: on to the app with a live session; a single sign-on identity becomes one; else the form
    (and a dead session cookie is cleared)."""
    next_path = safe_next(request.query_params.get("next"))
    token = request.cookies.get(COOKIE)
    if _live(config, token):
        return _go(next_path)
    if config.sso is not None and (identity := sso.provider_identity(request.cookies, config.sso)) is not None:
        return _sso_login(request, config, identity, next_path)
    response = _page(config, notice=NOTICES.get(request.query_params.get("m", "")), next_path=next_path)
    if token:
        clear_session_cookie(response, _secure(request, config))
    return response


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form's fields (first value of each), or None if it is not a small urlencoded form."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}


def password_answer(request: Request, config: WebConfig, form: Mapping[str, str], outcome: LoginOutcome) -> Response:
    """POST /login's answer to what the check came to: the same words whether the name exists or not, the
    throttle's wait, or a new token and on to the app."""
    username, next_path = form.get("username", ""), safe_next(form.get("next"))
    if outcome.db_down:
        return _page(config, 503, error=DB_DOWN, next_path=next_path, username=username)
    if outcome.retry_after is not None:
        response = _page(config, 429, error=str(Throttled(outcome.retry_after)), next_path=next_path,
                         username=username)
        response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if outcome.token is None:
        return _page(config, 401, error=LOGIN_FAILED, next_path=next_path, username=username)
    response = _go(next_path)
    set_session_cookie(response, outcome.token, _secure(request, config))
    return response


def end_session(request: Request, config: WebConfig) -> Response:
    """/logout: the session ends in the database and the cookie is cleared."""
    if _cross_site(request):  # a link on another site must not log anyone out
        return _go("/")
    with session_scope(config.db_url) as s:
        logout(s, request.cookies.get(COOKIE))
    response = _go("/login?m=out")
    clear_session_cookie(response, _secure(request, config))
    _forget_identity(request, response)
    return response


def sso_start(request: Request, config: WebConfig) -> Response:
    """GET /login/sso: to the identity provider, through Streamlit's login route (what st.login does)."""
    if config.sso is None:
        return PlainTextResponse("Single sign-on is not set up on this server.", status_code=404)
    return RedirectResponse(sso.login_url(config.sso), status_code=302, headers={"Cache-Control": "no-store"})


async def _answer(config: WebConfig, handler, *args) -> Response:
    """`handler(*args)` in a worker thread; a database that does not answer (restarting) is the form with a
    clear message and 503, never a traceback."""
    try:
        return await run_in_threadpool(handler, *args)
    except OperationalError:
        return _page(config, 503, error=DB_DOWN)


def routes(config: WebConfig, workers: LoginWorkers | None = None) -> list[Route]:
    """The login routes; passwords are checked on `workers` (by default a pool of config.login_workers
    processes, started by the first login)."""
    workers = workers if workers is not None else LoginWorkers(config.login_workers)

    async def get_login(request: Request) -> Response:
        return await _answer(config, login_form, request, config)

    async def post_login(request: Request) -> Response:
        if _cross_site(request):
            return PlainTextResponse("Log in from the storyloop login page.", status_code=403)
        form = await _form(request)
        if form is None:
            return PlainTextResponse("Expected the login form.", status_code=400)
        outcome = await workers.check(config.db_url, form.get("username", ""), form.get("password", ""),
                                      _client(request), request.cookies.get(COOKIE))
        return password_answer(request, config, form, outcome)

    async def do_logout(request: Request) -> Response:
        return await _answer(config, end_session, request, config)

    async def get_sso(request: Request) -> Response:
        return await _answer(config, sso_start, request, config)

    return [Route("/login", get_login, methods=["GET"]), Route("/login", post_login, methods=["POST"]),
            Route("/logout", do_logout, methods=["GET", "POST"]), Route("/login/sso", get_sso, methods=["GET"])]


# Paths the gate leaves alone: Streamlit's own (websocket, health, scripts, media, components, its OIDC
# routes) and the login routes.
_NOT_PAGES = ("/_stcore/", "/static/", "/media/", "/component/", "/app/", "/auth/", "/oauth2callback", "/login",
              "/logout")


def is_page_load(request: Request) -> bool:
    """A browser opening one of the app's pages (not a script, an image, the websocket or a health check)."""
    path = request.url.path
    if request.method not in ("GET", "HEAD") or path.startswith(_NOT_PAGES) or "." in path.rsplit("/", 1)[-1]:
        return False
    dest = request.headers.get("sec-fetch-dest")
    return dest == "document" if dest is not None else "text/html" in request.headers.get("accept", "")


class LoginGate:
    """A page load without a session cookie goes to the login form before the app loads (a dead cookie
    gets the app, whose first run finds the session ended and sends the browser to the form)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if COOKIE not in request.cookies and is_page_load(request):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                next_part = "" if target == "/" else f"?next={quote(target, safe='')}"
                await _go(f"/login{next_part}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """`APP_HEADERS` on every HTTP answer that does not set its own (the login page's are stricter)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in APP_HEADERS.items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middleware() -> list[Middleware]:
    """What runs in front of the app and the login routes, outermost first."""
    return [Middleware(SecurityHeaders), Middleware(LoginGate)]
