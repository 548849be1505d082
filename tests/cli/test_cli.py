import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.db import session_scope
from storyloop.db.models import Scenario, User
from tests.conftest import make_image

PASSWORD = "a-long-admin-password"


@pytest.fixture
def cli(tmp_path, db_url, monkeypatch):
    """Run `storyloop ...` against a temp data dir and the parametrized database."""
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORYLOOP_DB_URL", db_url)
    monkeypatch.setenv("STORYLOOP_ADMIN_PASSWORD", PASSWORD)
    runner = CliRunner()

    def run(*args, expect=0):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result

    run.url = db_url
    return run


def test_init_creates_admin_once_and_never_prints_the_password(cli):
    out = cli("init").output
    assert "admin 'admin' created" in out and PASSWORD not in out
    assert "an admin exists" in cli("init").output
    with session_scope(cli.url) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


def test_commands_on_an_uninitialised_database_say_how_to_fix_it(cli):
    assert "storyloop init" in cli("round", "list", expect=1).output


def test_user_lifecycle(cli, monkeypatch):
    cli("init")
    monkeypatch.setenv("STORYLOOP_PASSWORD", "annotator-password")
    cli("users", "add", "ann")
    assert "already exists" in cli("users", "add", "ann", expect=1).output
    cli("users", "set-role", "ann", "researcher")
    cli("users", "disable", "ann")
    listing = cli("users", "list").output
    assert "ann" in listing and "researcher" in listing and "no" in listing
    assert "no user named 'zed'" in cli("users", "disable", "zed", expect=1).output


def test_reset_password_and_sessions_end_logins(cli, monkeypatch):
    from storyloop.annotator.auth import login, resume

    cli("init")
    monkeypatch.setenv("STORYLOOP_PASSWORD", "annotator-password")
    cli("users", "add", "ann")
    with session_scope(cli.url) as s:
        first, _ = login(s, "ann", "annotator-password")
        second, _ = login(s, "ann", "annotator-password")
    listing = cli("users", "sessions", "ann").output
    assert listing.count("live") == 2
    assert "2 live login session(s) of 'ann' ended" in cli("users", "sessions", "ann", "--revoke").output
    with session_scope(cli.url) as s:
        assert resume(s, first) is None and resume(s, second) is None
    with session_scope(cli.url) as s:
        third, _ = login(s, "ann", "annotator-password")
    monkeypatch.setenv("STORYLOOP_PASSWORD", "a-brand-new-password")
    assert "1 login session(s) ended" in cli("users", "reset-password", "ann").output
    with session_scope(cli.url) as s:
        assert resume(s, third) is None
        assert login(s, "ann", "annotator-password") is None and login(s, "ann", "a-brand-new-password")
        fourth, _ = login(s, "ann", "a-brand-new-password")
    cli("users", "set-role", "ann", "researcher")  # a role change ends logins too
    with session_scope(cli.url) as s:
        assert resume(s, fourth) is None
    assert "no user named 'zed'" in cli("users", "sessions", "zed", expect=1).output


def test_an_email_for_single_sign_on_is_set_listed_and_cleared(cli, monkeypatch):
    cli("init")
    monkeypatch.setenv("STORYLOOP_PASSWORD", "annotator-password")
    assert "Added annotator 'ann' <ann@example.org>." in cli("users", "add", "ann", "--email", "Ann@Example.org").output
    assert "invalid e-mail address 'bob'" in cli("users", "add", "bob", "--email", "bob", expect=1).output
    cli("users", "add", "bob")
    assert "already belongs to user 'ann'" in cli("users", "set-email", "bob", "ANN@example.org", expect=1).output
    assert "'bob' has e-mail address bob@example.org." in cli("users", "set-email", "bob", "bob@example.org").output
    assert "bob@example.org" in cli("users", "list").output
    assert "password login only" in cli("users", "set-email", "bob", "--clear").output
    assert "give an e-mail address or --clear" in cli("users", "set-email", "bob", expect=1).output
    with session_scope(cli.url) as s:
        assert {u.username: u.email for u in s.scalars(select(User))} == {
            "admin": None, "ann": "ann@example.org", "bob": None}


@pytest.mark.parametrize("env, words", [
    ({"STORYLOOP_OIDC_CLIENT_ID": "storyloop"}, "single sign-on is half set up: set STORYLOOP_OIDC_METADATA_URL"),
    ({"STORYLOOP_SECURE_COOKIE": "sometimes"}, "STORYLOOP_SECURE_COOKIE='sometimes'"),
])
def test_annotate_refuses_bad_login_settings_before_starting(cli, monkeypatch, env, words):
    cli("init")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = cli("annotate", "--port", "1", expect=1).output
    assert words in out and "Traceback" not in out


def test_round_create_reports_bad_lines_and_writes_nothing(cli, tmp_path):
    cli("init")
    src = tmp_path / "src"
    make_image(src / "r.png")
    rows = [{"id": "a", "story_id": "s", "frame_index": 0, "prompt": "p", "references": ["r.png"]},
            {"id": "a", "story_id": "s", "frame_index": 1, "prompt": "p", "references": ["gone.png"]}]
    (src / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = cli("round", "create", "r1", "--scenarios", str(src / "s.jsonl"), expect=1).output
    assert "line 2: duplicate id 'a'" in out and "nothing was imported" in out
    assert "r1" not in cli("round", "list").output


def test_round_create_is_idempotent_and_shows_up(cli, tmp_path):
    cli("init")
    src = tmp_path / "src"
    make_image(src / "r.png")
    make_image(src / "c.png", (1, 2, 3))
    (src / "s.jsonl").write_text(json.dumps({"id": "a", "story_id": "s", "frame_index": 0, "prompt": "a fox",
                                             "references": ["r.png"], "candidates": ["c.png"]}))
    assert "Created round 'r1': 1 scenario(s) added" in cli("round", "create", "r1", "--scenarios",
                                                             str(src / "s.jsonl")).output
    assert "Unchanged:" in cli("round", "create", "r1", "--scenarios", str(src / "s.jsonl")).output
    cli("round", "create", "r2", "--parent", "r1")
    listing = cli("round", "list").output
    assert "r1" in listing and "r2" in listing
    assert "a fox" in cli("round", "show", "r1").output
    with session_scope(cli.url) as s:
        assert s.scalar(select(func.count()).select_from(Scenario)) == 1


def test_every_subcommand_has_help():
    runner = CliRunner()
    for command in ("init", "users", "round", "db", "generate", "annotate", "pairs", "export", "dpo", "demo",
                    "bench", "toy"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_an_unreachable_database_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["round", "list", "--data-dir", str(tmp_path / "missing" / "deeper")])
    assert result.exit_code == 1 and "cannot open the database" in result.output


def test_a_negative_reference_guidance_scale_is_refused_by_name(cli):
    out = cli("generate", "run", "--round", "r1", "--reference-guidance-scale", "1", "--reference-guidance-scale",
              "-1", expect=2).output
    assert "--reference-guidance-scale" in out
