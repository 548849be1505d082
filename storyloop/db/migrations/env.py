"""Alembic environment: run by `storyloop db upgrade` (via storyloop.db.migrate), not by hand."""

from alembic import context

from storyloop.db.engine import get_engine
from storyloop.db.models import Base

config = context.config


def run_migrations_online() -> None:
    engine = get_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("storyloop migrations run online only: use `storyloop db upgrade`")
run_migrations_online()
