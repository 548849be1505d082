import pytest
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import Role, User
from storyloop.db.users import UserError, add_user, authenticate, hash_password, set_active, verify_password


def test_password_is_stored_only_as_a_salted_argon2_hash(settings):
    with session_scope(settings.db_url) as s:
        add_user(s, "ann", "correct horse", Role.annotator)
        add_user(s, "bob", "correct horse", Role.annotator)
    with session_scope(settings.db_url) as s:
        ann, bob = s.scalars(select(User).order_by(User.username))
        assert ann.password_hash.startswith("$argon2id$")
        assert "correct horse" not in ann.password_hash
        assert ann.password_hash != bob.password_hash  # salted


def test_hash_verifies_only_the_right_password():
    h = hash_password("s3cret-pass")
    assert verify_password(h, "s3cret-pass")
    assert not verify_password(h, "s3cret-pasS")
    assert not verify_password("not-a-hash", "s3cret-pass")


def test_authenticate_refuses_wrong_password_unknown_user_and_disabled_alike(settings):
    with session_scope(settings.db_url) as s:
        add_user(s, "ann", "correct horse", Role.researcher)
    with session_scope(settings.db_url) as s:
        assert authenticate(s, "ann", "correct horse").role is Role.researcher
        assert authenticate(s, "ann", "wrong horse") is None
        assert authenticate(s, "nobody", "correct horse") is None
        set_active(s, "ann", False)
    with session_scope(settings.db_url) as s:
        assert authenticate(s, "ann", "correct horse") is None


def test_bad_usernames_short_passwords_and_duplicates_are_refused(settings):
    with session_scope(settings.db_url) as s:
        add_user(s, "ann", "correct horse")
        with pytest.raises(UserError, match="already exists"):
            add_user(s, "ann", "another horse")
        with pytest.raises(UserError, match="invalid username"):
            add_user(s, "a b", "correct horse")
        with pytest.raises(UserError, match="too short"):
            add_user(s, "cat", "short")
