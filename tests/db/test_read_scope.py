"""read_scope: the session long-running readers (trainers, their other ranks) use."""

import pytest
from sqlalchemy import select

from storyloop.db import read_scope, session_scope
from storyloop.db.models import Role, User
from storyloop.db.users import add_user


def test_a_reader_is_not_blocked_by_an_open_write_transaction(migrated_url):
    with session_scope(migrated_url) as s:
        add_user(s, "ann", "a-long-password", Role.annotator)
    with session_scope(migrated_url) as writer:  # holds SQLite's write lock until it commits
        writer.add(User(username="bob", password_hash="x", role=Role.annotator))
        writer.flush()
        with read_scope(migrated_url) as reader:  # on main this waited 30 s, then 'database is locked'
            names = reader.scalars(select(User.username)).all()
        assert names == ["ann"]  # the writer's uncommitted row is not visible
    with read_scope(migrated_url) as reader:
        assert sorted(reader.scalars(select(User.username))) == ["ann", "bob"]


def test_a_write_in_a_read_scope_is_refused_and_nothing_is_stored(migrated_url):
    with pytest.raises(RuntimeError, match="read_scope is for reading"):
        with read_scope(migrated_url) as reader:
            reader.add(User(username="eve", password_hash="x", role=Role.annotator))
            reader.flush()
    with read_scope(migrated_url) as reader:
        assert reader.scalars(select(User)).all() == []
