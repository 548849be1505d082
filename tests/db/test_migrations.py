import pytest
from alembic import command
from sqlalchemy import inspect

from storyloop.db import SchemaError, require_current_schema, upgrade
from storyloop.db.engine import get_engine
from storyloop.db.migrate import alembic_config, current_revision, head_revision
from storyloop.db.models import Base


def test_upgrade_from_empty_creates_every_table(db_url):
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_models_and_migrations_agree(migrated_url):
    # `alembic check` fails if autogenerate would emit any operation.
    command.check(alembic_config(migrated_url))


def test_upgrade_twice_is_a_no_op(migrated_url):
    upgrade(migrated_url)
    assert current_revision(migrated_url) == head_revision()


def test_revision_0003_adds_a_nullable_draft_to_leases_and_takes_it_back(db_url):
    def lease_columns():
        return {c["name"]: c for c in inspect(get_engine(db_url)).get_columns("leases")}

    upgrade(db_url, "0002")
    assert "draft" not in lease_columns()
    upgrade(db_url)
    assert lease_columns()["draft"]["nullable"]
    command.downgrade(alembic_config(db_url), "0002")
    assert "draft" not in lease_columns()


STUDY_TABLES = {"studies", "study_arms", "study_images", "study_items", "study_leases", "study_answers",
                "study_gold_answers"}


def test_revision_0004_adds_the_study_tables_and_keeps_existing_rows(db_url):
    from storyloop.db import session_scope
    from storyloop.db.models import Round, Scenario

    upgrade(db_url, "0003")
    assert not STUDY_TABLES & set(inspect(get_engine(db_url)).get_table_names())
    with get_engine(db_url).begin() as conn:
        conn.exec_driver_sql("INSERT INTO rounds (name, judgments_per_scenario, gold_rate, skip_policy, created_at) "
                             "VALUES ('r1', 3, 0.0, 'others', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO scenarios (round_id, key, story_id, frame_index, prompt, created_at) "
                             "SELECT id, 's1', 'st', 0, 'a fox', '2026-01-01 00:00:00' FROM rounds")
    upgrade(db_url)
    assert STUDY_TABLES <= set(inspect(get_engine(db_url)).get_table_names())
    with session_scope(db_url) as s:
        assert [(sc.round.name, sc.key, sc.prompt) for sc in s.query(Scenario)] == [("r1", "s1", "a fox")]
        assert s.query(Round).count() == 1
    command.downgrade(alembic_config(db_url), "0003")
    assert not STUDY_TABLES & set(inspect(get_engine(db_url)).get_table_names())


def test_revision_0008_adds_benchmark_results_and_a_null_source_to_existing_rounds(db_url):
    from storyloop.db import session_scope
    from storyloop.db.models import Round

    upgrade(db_url, "0007")
    with get_engine(db_url).begin() as conn:
        conn.exec_driver_sql("INSERT INTO rounds (name, judgments_per_scenario, gold_rate, skip_policy, created_at) "
                             "VALUES ('r1', 3, 0.0, 'others', '2026-01-01 00:00:00')")
    upgrade(db_url)
    assert "benchmark_results" in inspect(get_engine(db_url)).get_table_names()
    with session_scope(db_url) as s:
        assert [(r.name, r.source) for r in s.query(Round)] == [("r1", None)]
    command.downgrade(alembic_config(db_url), "0007")
    assert "benchmark_results" not in inspect(get_engine(db_url)).get_table_names()
    assert "source" not in {c["name"] for c in inspect(get_engine(db_url)).get_columns("rounds")}


def test_uninitialised_database_is_refused_with_the_fix(db_url):
    with pytest.raises(SchemaError, match="storyloop init"):
        require_current_schema(db_url)


def test_schema_behind_is_refused_with_the_fix(db_url, monkeypatch):
    upgrade(db_url)
    monkeypatch.setattr("storyloop.db.migrate.head_revision", lambda: "9999")
    with pytest.raises(SchemaError, match="storyloop db upgrade"):
        require_current_schema(db_url)


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_revision_0007_gives_references_a_nullable_character_and_keeps_existing_rounds(db_url):
    from storyloop.db import session_scope
    from storyloop.db.models import Scenario

    upgrade(db_url, "0006")
    with get_engine(db_url).begin() as conn:
        conn.exec_driver_sql("INSERT INTO rounds (name, judgments_per_scenario, gold_rate, skip_policy, created_at) "
                             "VALUES ('r1', 3, 0.0, 'others', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO scenarios (round_id, key, story_id, frame_index, prompt, created_at) "
                             "SELECT id, 's1', 'st', 0, 'a fox', '2026-01-01 00:00:00' FROM rounds")
        conn.exec_driver_sql("INSERT INTO assets (sha256, width, height, format, size_bytes, created_at) "
                             "VALUES ('ab', 8, 8, 'PNG', 10, '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO scenario_references (scenario_id, position, asset_id) "
                             "SELECT s.id, 0, a.id FROM scenarios s, assets a")
    upgrade(db_url)
    with session_scope(db_url) as s:
        sc = s.query(Scenario).one()
        assert [(r.position, r.character, r.asset.sha256) for r in sc.references] == [(0, None, "ab")]
    command.downgrade(alembic_config(db_url), "0006")
    columns = {c["name"] for c in inspect(get_engine(db_url)).get_columns("scenario_references")}
    assert "character" not in columns


def test_revision_0009_gives_judgments_a_nullable_active_seconds(db_url):
    def columns():
        return {c["name"]: c for c in inspect(get_engine(db_url)).get_columns("judgments")}

    upgrade(db_url, "0008")
    assert "active_seconds" not in columns()
    upgrade(db_url)
    assert columns()["active_seconds"]["nullable"]
    command.downgrade(alembic_config(db_url), "0008")
    assert "active_seconds" not in columns()


def test_revision_0010_gives_users_a_unique_nullable_email_and_keeps_accounts(db_url):
    from sqlalchemy.exc import IntegrityError

    def columns():
        return {c["name"]: c for c in inspect(get_engine(db_url)).get_columns("users")}

    upgrade(db_url, "0009")
    assert "email" not in columns()
    with get_engine(db_url).begin() as conn:
        for name in ("ann", "bob"):
            conn.exec_driver_sql("INSERT INTO users (username, password_hash, role, is_active, created_at) "
                                 f"VALUES ('{name}', 'x', 'annotator', TRUE, '2026-01-01 00:00:00')")
    upgrade(db_url)
    assert columns()["email"]["nullable"]
    with get_engine(db_url).begin() as conn:  # two accounts without an address: NULLs do not collide
        assert conn.exec_driver_sql("SELECT count(*) FROM users WHERE email IS NULL").scalar() == 2
        conn.exec_driver_sql("UPDATE users SET email = 'a@example.org' WHERE username = 'ann'")
    with pytest.raises(IntegrityError), get_engine(db_url).begin() as conn:
        conn.exec_driver_sql("UPDATE users SET email = 'a@example.org' WHERE username = 'bob'")
    command.downgrade(alembic_config(db_url), "0009")
    assert "email" not in columns()
