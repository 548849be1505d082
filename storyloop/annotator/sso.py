"""Optional single sign-on: Streamlit's OIDC login (what `st.login` does) in front of storyloop accounts.

Streamlit does the OpenID Connect part: its /auth/login route sends the browser to the provider, its
/oauth2callback route checks the answer and leaves the person's identity in a signed cookie. The login
route (storyloop.annotator.web) then reads that identity once, maps its e-mail address to a storyloop
account (`users.email`), starts an ordinary storyloop session and drops Streamlit's cookie: from there on
the login is a storyloop session like a password one (its expiry, logout and revocation). Password
accounts keep working beside it.

Switched on by STORYLOOP_OIDC_* variables (which `storyloop annotate` hands to Streamlit as its [auth]
secrets) or by an [auth] section in Streamlit's own .streamlit/secrets.toml. Needs Authlib
(pip install 'storyloop[sso]').
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

# STORYLOOP_OIDC_* variable -> the key of Streamlit's [auth] section it fills (one provider, "default").
OIDC_ENV = {
    "STORYLOOP_OIDC_METADATA_URL": "server_metadata_url",  # the provider's .well-known/openid-configuration
    "STORYLOOP_OIDC_CLIENT_ID": "client_id",
    "STORYLOOP_OIDC_CLIENT_SECRET": "client_secret",
    "STORYLOOP_OIDC_REDIRECT_URI": "redirect_uri",  # https://<this server>/oauth2callback, as registered
    "STORYLOOP_OIDC_COOKIE_SECRET": "cookie_secret",  # signs Streamlit's identity cookie: a long random string
}
PROVIDER_ENV = "STORYLOOP_SSO_PROVIDER"  # which provider of a secrets.toml [auth] section to offer
LABEL_ENV = "STORYLOOP_SSO_LABEL"  # the button's words
DEFAULT_LABEL = "Log in with single sign-on"
MIN_COOKIE_SECRET = 32
IDENTITY_COOKIE = "_streamlit_user"  # Streamlit's name for the identity its OIDC callback stores
_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


class SsoConfigError(ValueError):
    """The single sign-on settings are incomplete or contradict each other."""


@dataclass(frozen=True)
class SsoSettings:
    """Single sign-on is on: which provider the login page offers, and how to check what comes back."""

    provider: str  # the name Streamlit's login route is given ("default": a flat [auth] section)
    redirect_uri: str  # https://<this server>/oauth2callback: its origin is stamped into the identity cookie
    cookie_secret: str = field(repr=False)  # the key Streamlit signs the identity cookie with
    label: str = DEFAULT_LABEL  # the button's words on the login page
    # The [auth] section to hand Streamlit (st.App secrets) when it came from STORYLOOP_OIDC_*; None when it
    # is already in Streamlit's secrets.toml.
    streamlit_auth: dict[str, str] | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        url = urlparse(self.redirect_uri)
        return f"{url.scheme}://{url.netloc}"


def _check_redirect_uri(value: Any, name: str) -> str:
    url = urlparse(str(value))
    if url.scheme not in ("http", "https") or not url.netloc or not url.path.endswith("/oauth2callback"):
        raise SsoConfigError(f"{name} {value!r}: give this server's address ending in /oauth2callback "
                             "(e.g. https://annotate.example.org/oauth2callback), as registered with the provider")
    return str(value)


def _check_cookie_secret(value: Any, name: str) -> str:
    if len(str(value)) < MIN_COOKIE_SECRET:
        raise SsoConfigError(f"{name} is too short: use at least {MIN_COOKIE_SECRET} random characters "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return str(value)


def sso_settings(env: Mapping[str, str], auth_section: Mapping[str, Any] | None = None) -> SsoSettings | None:
    """The single sign-on settings from STORYLOOP_OIDC_* in `env`, else from Streamlit's [auth] secrets
    section (`auth_section`); None when neither asks for it (password logins only)."""
    label = env.get(LABEL_ENV, "").strip() or DEFAULT_LABEL
    given = {name: env[name].strip() for name in OIDC_ENV if env.get(name, "").strip()}
    if given:
        missing = [name for name in OIDC_ENV if name not in given]
        if missing:
            raise SsoConfigError(f"single sign-on is half set up: set {', '.join(missing)} as well "
                                 f"(or unset {', '.join(given)} for password logins only)")
        redirect_uri = _check_redirect_uri(given["STORYLOOP_OIDC_REDIRECT_URI"], "STORYLOOP_OIDC_REDIRECT_URI")
        secret = _check_cookie_secret(given["STORYLOOP_OIDC_COOKIE_SECRET"], "STORYLOOP_OIDC_COOKIE_SECRET")
        return SsoSettings("default", redirect_uri, secret, label,
                           {key: given[name] for name, key in OIDC_ENV.items()})
    if not auth_section:
        if env.get(PROVIDER_ENV):
            raise SsoConfigError(f"{PROVIDER_ENV} is set but no provider is configured: set the STORYLOOP_OIDC_* "
                                 "variables or an [auth] section in .streamlit/secrets.toml")
        return None
    providers = [name for name, value in auth_section.items() if isinstance(value, Mapping)]
    if any(key in auth_section for key in _PROVIDER_KEYS):
        providers.append("default")
    wanted = env.get(PROVIDER_ENV, "").strip()
    if wanted:
        if wanted not in providers:
            raise SsoConfigError(f"{PROVIDER_ENV}={wanted!r}: the [auth] section of secrets.toml has "
                                 f"{', '.join(map(repr, providers)) or 'no provider'}")
        provider = wanted
    elif len(providers) == 1:
        provider = providers[0]
    else:
        raise SsoConfigError(f"the [auth] section of secrets.toml has {len(providers)} providers "
                             f"({', '.join(map(repr, providers)) or 'none'}): name the one to offer with "
                             f"{PROVIDER_ENV}")
    for key in ("redirect_uri", "cookie_secret"):
        if not auth_section.get(key):
            raise SsoConfigError(f"the [auth] section of secrets.toml lacks {key}")
    return SsoSettings(provider, _check_redirect_uri(auth_section["redirect_uri"], "[auth] redirect_uri"),
                       _check_cookie_secret(auth_section["cookie_secret"], "[auth] cookie_secret"), label)


def streamlit_auth_section() -> Mapping[str, Any] | None:
    """The [auth] section of Streamlit's secrets.toml files, if there is one."""
    from streamlit.runtime.secrets import secrets_singleton

    if not secrets_singleton.load_if_toml_exists():
        return None
    section = secrets_singleton.get("auth")
    return section.to_dict() if hasattr(section, "to_dict") else section


def require_authlib() -> None:
    """Streamlit's OIDC routes need Authlib: say so at start-up, not at the first login."""
    from streamlit.auth_util import is_authlib_installed

    if not is_authlib_installed():
        raise SsoConfigError("single sign-on needs Authlib: pip install 'storyloop[sso]' (or Authlib>=1.3.2)")


def login_url(settings: SsoSettings) -> str:
    """Where the single sign-on button sends the browser: Streamlit's login route for the provider, with the
    signed provider token `st.login` would send."""
    from streamlit.user_info import generate_login_redirect_url

    return generate_login_redirect_url(settings.provider)


@dataclass(frozen=True)
class Identity:
    """What the provider vouched for."""

    email: str
    email_verified: bool | None  # None: the provider did not say


def provider_identity(cookies: Mapping[str, str], settings: SsoSettings) -> Identity | None:
    """The identity in Streamlit's signed identity cookie (its chunks joined), checked as Streamlit's own
    server checks it: a valid signature with the cookie secret and this server's origin stamped in it.
    None when there is none, or it is forged, expired, from another origin or has no e-mail address."""
    from streamlit.auth_util import get_cookie_with_chunks
    from streamlit.web.server.starlette.starlette_app_utils import decode_signed_value

    def one(name: str) -> bytes | None:
        raw = cookies.get(name)
        if raw is None:
            return None
        return decode_signed_value(settings.cookie_secret, name, raw.encode("latin-1"))  # cookies are latin-1

    decoded = get_cookie_with_chunks(one, IDENTITY_COOKIE)
    if decoded is None:
        return None
    try:
        payload = json.loads(decoded)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("origin") != settings.origin or not payload.get("is_logged_in"):
        return None
    email = payload.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    verified = payload.get("email_verified")
    return Identity(email.strip(), verified if isinstance(verified, bool) else None)


def identity_cookie_names(cookies: Mapping[str, str]) -> list[str]:
    """Streamlit's identity cookies this browser sent (the main one, its chunks, the tokens), to delete."""
    return [name for name in cookies if name.startswith(IDENTITY_COOKIE)]
