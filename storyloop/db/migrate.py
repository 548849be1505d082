"""Schema migrations: apply them, and refuse to work on a database that is behind."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from storyloop.db.engine import get_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaError(RuntimeError):
    """The database schema does not match this version of storyloop."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(url: str) -> str | None:
    try:
        with get_engine(url).connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:  # no such file or folder, server down, wrong credentials
        raise SchemaError(f"cannot open the database at {_safe(url)} ({str(exc.orig).splitlines()[0]}): "
                          "check --db / --data-dir, or run `storyloop init`") from None


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def require_current_schema(url: str) -> None:
    """Raise SchemaError unless the database is exactly at this code's head revision."""
    current, head = current_revision(url), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError(f"the database at {_safe(url)} is not initialised: run `storyloop init`")
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    if script.get_revision(current) is None:
        raise SchemaError(
            f"the database is at revision {current}, which this storyloop does not know "
            f"(newer code wrote it?): upgrade storyloop")
    raise SchemaError(f"the database schema is behind (at {current}, code expects {head}): "
                      "run `storyloop db upgrade`")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)
