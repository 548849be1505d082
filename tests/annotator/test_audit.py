"""The audit log: every act it names leaves one event, the table refuses changes, the CLI and the admin page show it."""

import json

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from storyloop.annotator.auth import login
from storyloop.annotator.gold import clear_gold, set_gold
from storyloop.annotator.rounds import update_round
from storyloop.cli.main import app
from storyloop.db import session_scope
from storyloop.db.audit import events, parse_since
from storyloop.db.models import AuditEvent, Outcome, Role, SkipPolicy
from storyloop.db.users import add_user, end_sessions, set_active, set_password, set_role
from tests.annotator.conftest import PASSWORD


def actions(url):
    with session_scope(url) as s:
        return [(e.actor, e.action, e.target) for e in reversed(events(s))]


def test_logins_accounts_gold_and_round_settings_are_logged_once_each(small_round):
    url, u, c = small_round.settings.db_url, small_round.users, small_round.candidates
    s0 = small_round.scenarios[0]
    with session_scope(url) as s:
        login(s, "ann", PASSWORD, client="203.0.113.7")
        assert login(s, "ann", "wrong-password", client="203.0.113.8") is None
        set_role(s, "bob", Role.researcher, actor="cli:ops")
        set_active(s, "cat", False, actor="cli:ops")
        set_active(s, "cat", True, actor="cli:ops")
        set_password(s, "ann", "a-new-password", actor="cli:ops")
        set_gold(s, s0, Outcome.ranked, [c[s0][0]], [], actor=u["rita"])
        clear_gold(s, s0, actor=u["rita"])
        update_round(s, small_round.round_id, 3, 0.1, SkipPolicy.counts, actor=u["rita"])
    got = actions(url)
    assert got == [("ann", "login", None), ("ann", "login_failed", "ann"),
                   ("cli:ops", "role_changed", "bob"), ("cli:ops", "account_disabled", "cat"),
                   ("cli:ops", "account_enabled", "cat"), ("cli:ops", "password_reset", "ann"),
                   ("cli:ops", "sessions_ended", "ann"),  # ann's login from above ended with the reset
                   ("rita", "gold_set", "s0"), ("rita", "gold_cleared", "s0"), ("rita", "round_settings_changed", "r1")]
    with session_scope(url) as s:
        logged = {e.action: e for e in events(s)}
        assert logged["login"].client == "203.0.113.7" and logged["login_failed"].client == "203.0.113.8"
        assert logged["role_changed"].details == {"from": "annotator", "to": "researcher"}
        assert logged["round_settings_changed"].details["to"] == {"k": 3, "gold_rate": 0.1, "skip_policy": "counts"}
        assert [e.action for e in events(s, user="cat")] == ["account_enabled", "account_disabled"]
        assert end_sessions(s, "bob") == 0  # nothing ended, nothing logged


def test_the_log_refuses_updates_and_deletes(small_round):
    url = small_round.settings.db_url
    with session_scope(url) as s:
        login(s, "ann", PASSWORD)
    for statement in (update(AuditEvent).values(actor="someone-else"), text("DELETE FROM audit_events")):
        with pytest.raises(DBAPIError, match="append-only"), session_scope(url) as s:
            s.execute(statement)
    assert actions(url) == [("ann", "login", None)]


def test_audit_command_filters_by_user_and_time(small_round, monkeypatch):
    url = small_round.settings.db_url
    with session_scope(url) as s:
        login(s, "ann", PASSWORD, client="198.51.100.1")
        set_role(s, "bob", Role.researcher, actor="cli:ops")
    monkeypatch.setenv("STORYLOOP_DB_URL", url)
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(small_round.settings.data_dir))
    out = CliRunner().invoke(app, ["audit", "--user", "bob", "--since", "1h", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [(r["actor"], r["action"], r["target"]) for r in rows] == [("cli:ops", "role_changed", "bob")]
    assert "ann" in CliRunner().invoke(app, ["audit"]).output
    later = CliRunner().invoke(app, ["audit", "--since", "2999-01-01", "--json"])
    assert later.exit_code == 0 and later.output.strip() == ""
    bad = CliRunner().invoke(app, ["audit", "--since", "yesterday"])
    assert bad.exit_code == 1 and "an age (30m, 12h, 7d)" in bad.output
    with pytest.raises(ValueError):
        parse_since("3 weeks")


def test_admin_page_shows_the_log_and_only_to_admins(small_round, monkeypatch):
    from tests.annotator.test_pages import APP, PAGES, login as page_login

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(small_round.settings.data_dir))
    monkeypatch.setenv("STORYLOOP_DB_URL", small_round.settings.db_url)
    with session_scope(small_round.settings.db_url) as s:
        add_user(s, "ada", PASSWORD, Role.admin)
    at = page_login(AppTest.from_file(APP, default_timeout=30).run(), "ada", PASSWORD)
    at.switch_page(f"{PAGES}/audit.py").run()
    assert not at.exception
    assert ("ada", "login") in zip(at.dataframe[0].value.who, at.dataframe[0].value.action)
    rita = page_login(AppTest.from_file(APP, default_timeout=30).run(), "rita", PASSWORD)
    with pytest.raises(Exception):
        rita.switch_page(f"{PAGES}/audit.py").run()
