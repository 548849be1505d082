"""The database: schema (models), migrations, and the functions every other package calls."""

from storyloop.db.engine import get_engine, read_scope, session_scope
from storyloop.db.migrate import SchemaError, require_current_schema, upgrade

__all__ = ["get_engine", "read_scope", "session_scope", "SchemaError", "require_current_schema", "upgrade"]
