"""Single sign-on without a provider: its settings, the e-mail -> account mapping, and the login route turning
the identity Streamlit's OIDC callback leaves (a cookie signed as Streamlit signs it) into a storyloop session."""

from __future__ import annotations

import json

import pytest
from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

from storyloop.annotator import sso, web
from storyloop.annotator.auth import COOKIE, SSO_UNKNOWN, login_by_email, resume
from storyloop.db import audit, session_scope
from storyloop.db.models import Role
from storyloop.db.users import UserError, add_user, set_active, set_email, user_by_email
from tests.annotator.test_web import make_client

SECRET = "s" * 40
ENV = {"STORYLOOP_OIDC_METADATA_URL": "https://id.example.org/.well-known/openid-configuration",
       "STORYLOOP_OIDC_CLIENT_ID": "storyloop", "STORYLOOP_OIDC_CLIENT_SECRET": "shh",
       "STORYLOOP_OIDC_REDIRECT_URI": "http://testserver/oauth2callback", "STORYLOOP_OIDC_COOKIE_SECRET": SECRET}


# -- settings -----------------------------------------------------------------------------------------

def test_no_settings_means_password_logins_only():
    assert sso.sso_settings({}) is None and sso.sso_settings({}, {}) is None


def test_the_oidc_variables_become_streamlits_auth_section():
    settings = sso.sso_settings({**ENV, sso.LABEL_ENV: "Log in with Example ID"})
    assert (settings.provider, settings.origin, settings.label) == ("default", "http://testserver",
                                                                    "Log in with Example ID")
    assert settings.streamlit_auth == {
        "server_metadata_url": ENV["STORYLOOP_OIDC_METADATA_URL"], "client_id": "storyloop", "client_secret": "shh",
        "redirect_uri": "http://testserver/oauth2callback", "cookie_secret": SECRET}
    assert SECRET not in repr(settings)


@pytest.mark.parametrize("change, words", [
    ({"STORYLOOP_OIDC_CLIENT_SECRET": ""}, "set STORYLOOP_OIDC_CLIENT_SECRET as well"),
    ({"STORYLOOP_OIDC_REDIRECT_URI": "https://annotate.example.org/"}, "ending in /oauth2callback"),
    ({"STORYLOOP_OIDC_COOKIE_SECRET": "short"}, "too short"),
])
def test_a_half_or_wrong_oidc_setting_says_what_to_fix(change, words):
    with pytest.raises(sso.SsoConfigError, match=words):
        sso.sso_settings({**ENV, **change})


def test_a_secrets_toml_auth_section_names_its_provider():
    section = {"redirect_uri": "https://a.example.org/oauth2callback", "cookie_secret": SECRET,
               "okta": {"client_id": "x", "client_secret": "y", "server_metadata_url": "https://o/.well-known"}}
    settings = sso.sso_settings({}, section)
    assert (settings.provider, settings.streamlit_auth) == ("okta", None)  # Streamlit reads secrets.toml itself
    flat = {"redirect_uri": "https://a.example.org/oauth2callback", "cookie_secret": SECRET, "client_id": "x",
            "client_secret": "y", "server_metadata_url": "https://o/.well-known"}
    assert sso.sso_settings({}, flat).provider == "default"
    two = {**section, "google": {"client_id": "g"}}
    with pytest.raises(sso.SsoConfigError, match="2 providers .* STORYLOOP_SSO_PROVIDER"):
        sso.sso_settings({}, two)
    assert sso.sso_settings({sso.PROVIDER_ENV: "google"}, two).provider == "google"
    with pytest.raises(sso.SsoConfigError, match="'azure'"):
        sso.sso_settings({sso.PROVIDER_ENV: "azure"}, two)
    with pytest.raises(sso.SsoConfigError, match="lacks cookie_secret"):
        sso.sso_settings({}, {k: v for k, v in section.items() if k != "cookie_secret"})


def test_without_authlib_single_sign_on_refuses_to_start_with_the_install_hint():
    pytest.importorskip("streamlit.auth_util")
    from streamlit.auth_util import is_authlib_installed

    if is_authlib_installed():
        pytest.skip("Authlib is installed here")
    with pytest.raises(sso.SsoConfigError, match=r"pip install 'storyloop\[sso\]'"):
        sso.require_authlib()


# -- the e-mail -> account mapping -----------------------------------------------------------------------

@pytest.fixture
def url(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "password123", Role.annotator, email="Ann@Example.org")
        add_user(s, "rita", "password123", Role.researcher)
    return migrated_url


def test_an_address_maps_to_its_account_whatever_its_case(url):
    with session_scope(url) as s:
        assert user_by_email(s, "  ANN@example.ORG ").username == "ann"
        assert user_by_email(s, "rita@example.org") is None and user_by_email(s, "not an address") is None
        set_email(s, "rita", "rita@example.org", actor="cli:ops")
        assert user_by_email(s, "rita@example.org").username == "rita"
        with pytest.raises(UserError, match="already belongs to user 'ann'"):
            set_email(s, "rita", "ann@example.org")
        with pytest.raises(UserError, match="invalid e-mail address 'rita'"):
            set_email(s, "rita", "rita")
        set_email(s, "rita", None)
        assert user_by_email(s, "rita@example.org") is None
        assert [(e.action, e.details) for e in audit.events(s, user="rita")][:2] == [
            ("email_changed", {"from": "rita@example.org", "to": None}),
            ("email_changed", {"from": None, "to": "rita@example.org"})]


def test_an_sso_login_is_a_session_for_an_active_account_only(url):
    with session_scope(url) as s:
        token, who = login_by_email(s, "ann@example.org", client="203.0.113.9")
        assert (who.username, who.role) == ("ann", Role.annotator) and resume(s, token).username == "ann"
        assert login_by_email(s, "stranger@example.org") is None
        set_active(s, "ann", False)
        assert login_by_email(s, "ann@example.org") is None and resume(s, token) is None
        logged = [(e.action, e.actor, e.details) for e in audit.events(s)]
    assert ("login", "ann", {"via": "sso"}) in logged
    assert ("login_failed", "stranger@example.org", {"via": "sso"}) in logged
    assert [a for a, _, _ in logged].count("login_failed") == 2  # the stranger, then ann once disabled


# -- the route: Streamlit's identity cookie -> a storyloop session ---------------------------------------

def identity(email="ann@example.org", origin="http://testserver", verified=True, secret=SECRET) -> dict:
    payload = {"origin": origin, "is_logged_in": True, "email": email, "email_verified": verified, "name": "Ann"}
    return {sso.IDENTITY_COOKIE: create_signed_value(secret, sso.IDENTITY_COOKIE, json.dumps(payload)).decode()}


@pytest.fixture
def client(url):
    return make_client(web.WebConfig(url, sso=sso.sso_settings(ENV)))


def deleted(response) -> set[str]:
    return {h.split("=")[0] for h in response.headers.get_list("set-cookie") if "Max-Age=0" in h}


def test_the_identity_becomes_a_storyloop_session_once(client, url):
    client.cookies.update(identity("ANN@example.org"))
    response = client.get("/login?next=/history")
    assert response.status_code == 303 and response.headers["location"] == "/history"
    token = response.cookies[COOKIE]
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE))
    assert "HttpOnly" in header and "SameSite=strict" in header
    assert sso.IDENTITY_COOKIE in deleted(response)  # Streamlit's identity is used up
    with session_scope(url) as s:
        assert resume(s, token).username == "ann"


def test_an_unknown_address_is_refused_with_what_to_do(client, url):
    client.cookies.update(identity("stranger@example.org"))
    response = client.get("/login")
    assert response.status_code == 403 and COOKIE not in response.cookies
    assert SSO_UNKNOWN.format(email="stranger@example.org") in response.text.replace("&#x27;", "'")
    assert "set-email" in response.text and sso.IDENTITY_COOKIE in deleted(response)


def test_an_unverified_address_is_refused(client):
    client.cookies.update(identity(verified=False))
    response = client.get("/login")
    assert response.status_code == 403 and "has not verified the e-mail address" in response.text


@pytest.mark.parametrize("cookie", [identity(secret="f" * 40), identity(origin="https://elsewhere.example"),
                                    {sso.IDENTITY_COOKIE: "not-even-signed"}])
def test_a_forged_or_foreign_identity_gets_the_form(client, cookie):
    client.cookies.update(cookie)
    response = client.get("/login")
    assert response.status_code == 200 and COOKIE not in response.cookies and 'name="password"' in response.text


def test_the_form_offers_single_sign_on_only_when_it_is_on(client, url):
    assert 'href="/login/sso">Log in with single sign-on</a>' in client.get("/login").text
    off = make_client(web.WebConfig(url))
    assert "/login/sso" not in off.get("/login").text
    assert off.get("/login/sso").status_code == 404
