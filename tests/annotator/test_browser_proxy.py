"""The reverse proxies of docs/deploy.md (deploy/nginx-storyloop.conf, deploy/Caddyfile) in front of
`storyloop annotate`, in Chromium.

The config files themselves are used (only names, ports and certificates are swapped for the test's): the
proxy accepts it, plain HTTP is sent to HTTPS (nginx; Caddy does it on its own), an annotator logs in and
judges over HTTPS (Streamlit's websocket passes the proxy, its Origin accepted), and the login is throttled
by the address the proxy saw, not by an X-Forwarded-For the browser made up.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from storyloop.db import session_scope, upgrade
from storyloop.db.models import AuditEvent
from storyloop.settings import Settings
from tests.annotator.conftest import PASSWORD, build_round
from tests.annotator.test_browser import (
    CHROMIUM,
    _free_port,
    _prompt,
    _require_chromium,
    _serve,
    _step,
    _stop,
)

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx-storyloop.conf"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
SPOOFED = "203.0.113.66"
HOST = "annotate.storyloop.test"  # a name, not 127.0.0.1: Streamlit lets any local origin's websocket in

pytestmark = pytest.mark.slow


def _tool(name: str) -> str:
    found = os.environ.get(f"STORYLOOP_TEST_{name.upper()}") or shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing: .ci/run must install it (apt-get install {name})")
    pytest.skip(f"no {name} (apt-get install {name}, or STORYLOOP_TEST_{name.upper()}=path) to test its config")


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, f"the deploy config no longer has {old!r}: update this test with it"
    return text.replace(old, new)


def _nginx_config(tmp: Path, https_port: int, http_port: int, app_port: int) -> Path:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
                    "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    site = SITE.read_text()
    site = _swap(site, "/etc/letsencrypt/live/annotate.example.org/fullchain.pem", str(tmp / "cert.pem"))
    site = _swap(site, "/etc/letsencrypt/live/annotate.example.org/privkey.pem", str(tmp / "key.pem"))
    site = _swap(site, "annotate.example.org", HOST)
    site = _swap(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = _swap(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = _swap(site, "server 127.0.0.1:8501;", f"server 127.0.0.1:{app_port};")
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)  # no IPv6 needed here
    (tmp / "site.conf").write_text(site)
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)  # nginx's workers run as nobody when started as root
    (tmp / "nginx.conf").write_text(f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {tmp}/site.conf;
}}
""")
    return tmp / "nginx.conf"


def _wait_for(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("nginx did not start:\n" + (log.read_text() if log.exists() else ""))
        time.sleep(0.1)


def _start_nginx(tmp: Path, https_port: int, http_port: int, app_port: int) -> subprocess.Popen:
    nginx = _tool("nginx")
    conf = _nginx_config(tmp, https_port, http_port, app_port)
    checked = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    return subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"])


def _start_caddy(tmp: Path, https_port: int, http_port: int, app_port: int) -> subprocess.Popen:
    caddy = _tool("caddy")
    site = _swap(CADDYFILE.read_text(), "annotate.example.org {", f"https://{HOST}:{https_port} {{\n\ttls internal")
    site = _swap(site, "127.0.0.1:8501", f"127.0.0.1:{app_port}")
    # a certificate of its own CA, not Let's Encrypt; nothing installed on this machine; no port 80
    options = f"{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {http_port}\n\tauto_https disable_redirects\n}}\n"
    (tmp / "Caddyfile").write_text(options + site)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config")}
    checked = subprocess.run([caddy, "validate", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"],
                             capture_output=True, text=True, env=env, check=False)
    assert checked.returncode == 0, checked.stderr
    log = (tmp / "error.log").open("w")
    return subprocess.Popen([caddy, "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(params=["nginx", "caddy"])
def proxied(request, tmp_path, monkeypatch):
    """`storyloop annotate` (throttling by X-Forwarded-For) behind the deploy config of nginx or Caddy: the proxy's
    name, its HTTPS URL, its plain HTTP one, and the round."""
    _require_chromium()
    start = {"nginx": _start_nginx, "caddy": _start_caddy}[request.param]
    proxy_dir = tmp_path / request.param
    proxy_dir.mkdir()
    proxy_dir.chmod(0o755)
    settings = Settings.resolve(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    rf = build_round(settings, tmp_path / "src", scenarios=1, candidates=3, k=1, size=(64, 64))
    monkeypatch.setenv("STORYLOOP_CLIENT_HEADER", "X-Forwarded-For")
    app_port, https_port, http_port = _free_port(), _free_port(), _free_port()
    proc = start(proxy_dir, https_port, http_port, app_port)
    app = _serve(settings, app_port, tmp_path / "server.log")
    try:
        _wait_for(https_port, proc, proxy_dir / "error.log")
        yield request.param, f"https://{HOST}:{https_port}", f"http://127.0.0.1:{http_port}", rf
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        _stop(app)


@pytest.fixture
def browser():
    """Chromium that finds HOST at 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu",
            f"--host-resolver-rules=MAP {HOST} 127.0.0.1"])
        yield b
        b.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_deploy_proxy_config_serves_the_annotator_over_https_with_its_websocket(proxied, browser):
    from playwright.sync_api import expect

    proxy, https_url, http_url, rf = proxied
    if proxy == "nginx":
        with pytest.raises(urllib.error.HTTPError) as moved:  # plain HTTP goes to HTTPS
            urllib.request.build_opener(_NoRedirect).open(
                urllib.request.Request(f"{http_url}/some/page", headers={"Host": HOST}), timeout=10)
        assert moved.value.code == 301 and moved.value.headers["Location"] == f"https://{HOST}/some/page"

    context = browser.new_context(viewport={"width": 1440, "height": 900}, ignore_https_errors=True,
                                  extra_http_headers={"X-Forwarded-For": SPOOFED})
    page = context.new_page()
    page.goto(https_url)
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    _prompt(page, "frame 0: Mia waves")  # the app's websocket made it through the proxy, its Origin accepted
    _step(page, "Character consistency")
    page.keyboard.press("2")  # a key press: browser -> websocket -> server -> back
    expect(page.locator('[class*="st-key-card-2-fail"]')).to_be_visible()
    with session_scope(rf.settings.db_url) as s:
        clients = [e.client for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "login"))]
    assert clients == ["127.0.0.1"]  # the address the proxy saw, not the one the browser wrote
