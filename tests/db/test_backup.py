"""Backup and restore: dump a judged round and its image store, wipe both, restore, and find the same rows,
the same judgments and the same image bytes; a restore that would overwrite, or a damaged backup, is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from storyloop.annotator.auth import login
from storyloop.annotator.gold import set_gold
from storyloop.annotator.work_queue import next_task
from storyloop.annotator.submit import submit_task
from storyloop.cli.main import app
from storyloop.db import session_scope
from storyloop.db.backup import MANIFEST, STORE_TAR, BackupError, backup, restore
from storyloop.db.engine import get_engine, normalize_url
from storyloop.db.models import Judgment, Outcome
from tests.annotator.conftest import PASSWORD, small_round  # noqa: F401  (small_round: the fixture)
from tests.conftest import PG_ENV


def _store_hashes(store_dir) -> dict[str, str]:
    """Every file of the store by its path in the store, with the sha256 of its bytes."""
    return {p.relative_to(store_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store_dir.rglob("*")) if p.is_file()}


def _judgments(url) -> list[tuple]:
    with session_scope(url) as s:
        return [(j.scenario_id, j.user_id, j.revision, j.idempotency_key, j.outcome, j.shown_order,
                 sorted((l.candidate_id, l.consistency_pass, l.anatomy_pass, l.aesthetics_rank) for l in j.labels))
                for j in s.scalars(select(Judgment).order_by(Judgment.id))]


def _judge(url, user_id, best: int) -> None:
    with session_scope(url) as s:
        task = next_task(s, user_id)
    task.draft.toggle(1), task.draft.advance(), task.draft.advance(), task.draft.toggle(best)
    with session_scope(url) as s:
        submit_task(s, task)


def _wipe(url: str) -> None:
    """Drop the database and make an empty one of the same name (SQLite: delete the file)."""
    get_engine(url).dispose()
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(parsed.database + suffix):
                os.remove(parsed.database + suffix)
        return
    admin = create_engine(normalize_url(os.environ[PG_ENV]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@pytest.fixture
def judged(small_round):
    """The small round with two judgments, a gold answer, logins in the audit log."""
    rf, url = small_round, small_round.settings.db_url
    _judge(url, rf.users["ann"], best=2)
    _judge(url, rf.users["bob"], best=3)
    s0 = rf.scenarios[0]
    with session_scope(url) as s:
        set_gold(s, s0, Outcome.ranked, [rf.candidates[s0][1]], [], actor=rf.users["rita"])
        login(s, "ann", PASSWORD)
    return rf


def test_backup_wipe_restore_gives_back_every_row_and_every_image(judged, tmp_path):
    settings = judged.settings
    before_judgments = _judgments(settings.db_url)
    before_store = _store_hashes(settings.store_dir)
    assert len(before_judgments) == 2 and len(before_store) == 3 * 4  # 3 scenarios: a reference, 3 candidates

    manifest = backup(settings, tmp_path / "backup")
    before_rows = manifest["rows"]
    assert before_rows["judgments"] == 2 and before_rows["gold_answers"] == 1 and before_rows["assets"] == 12
    assert manifest["store_files"] == 12 and sorted(p.name for p in (tmp_path / "backup").iterdir()) == sorted(
        [MANIFEST, STORE_TAR, "database.pgdump" if manifest["database"] == "postgresql" else "database.sqlite"])

    _wipe(settings.db_url)
    shutil.rmtree(settings.store_dir)
    done = restore(settings, tmp_path / "backup")

    assert done["rows"] == before_rows and done["images"] == 12
    assert _judgments(settings.db_url) == before_judgments
    assert _store_hashes(settings.store_dir) == before_store
    with session_scope(settings.db_url) as s:  # the restore itself is in the audit log, after what was restored
        assert s.execute(text("SELECT action FROM audit_events ORDER BY id DESC")).scalars().first() == "restored"
    _judge(settings.db_url, judged.users["cat"], best=2)  # the restored database takes new work (sequences too)
    assert len(_judgments(settings.db_url)) == 3


def test_a_restore_into_a_database_in_use_is_refused_and_changes_nothing(judged, tmp_path):
    settings = judged.settings
    backup(settings, tmp_path / "backup")
    _judge(settings.db_url, judged.users["cat"], best=2)
    after = _judgments(settings.db_url)
    with pytest.raises(BackupError, match="is not empty .* restore into a new one"):
        restore(settings, tmp_path / "backup")
    assert _judgments(settings.db_url) == after


def test_a_damaged_backup_is_refused_before_anything_is_loaded(judged, tmp_path):
    settings = judged.settings
    backup(settings, tmp_path / "backup")
    with (tmp_path / "backup" / STORE_TAR).open("r+b") as f:  # one byte of an image changes
        f.seek(2048)
        byte = f.read(1)
        f.seek(2048)
        f.write(bytes([byte[0] ^ 0xFF]))
    _wipe(settings.db_url)
    with pytest.raises(BackupError, match="store.tar: its contents changed"):
        restore(settings, tmp_path / "backup")
    from sqlalchemy import inspect
    assert inspect(get_engine(settings.db_url)).get_table_names() == []  # nothing loaded


def test_a_store_missing_an_image_fails_the_restore_check(judged, tmp_path):
    """A store file lost before the backup (disk trouble) is found by the restore's check, by name."""
    settings = judged.settings
    victim = next(p for p in sorted(settings.store_dir.rglob("*.png")))
    victim.unlink()
    backup(settings, tmp_path / "backup")
    _wipe(settings.db_url)
    shutil.rmtree(settings.store_dir)
    with pytest.raises(BackupError, match=f"1 image\\(s\\) missing .* e.g. {victim.stem}"):
        restore(settings, tmp_path / "backup")


def test_backup_refuses_an_existing_folder_and_leaves_no_partial_one(judged, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(BackupError, match="exists: give a new folder"):
        backup(judged.settings, tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("taken")) == ["taken"]


def test_a_tar_with_anything_but_store_files_is_refused(tmp_path):
    from storyloop.db.backup import _unpack_store

    evil = tmp_path / "evil"
    evil.mkdir()
    (tmp_path / "x.txt").write_text("not an image")
    with tarfile.open(evil / STORE_TAR, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="store/../../x.txt")
    with pytest.raises(BackupError, match="holds more than the image store's files"):
        _unpack_store(evil, tmp_path / "target" / "data")
    assert not (tmp_path / "target").exists() and not (tmp_path / "target" / "x.txt").exists()


def test_db_backup_and_restore_commands(judged, tmp_path, monkeypatch):
    settings = judged.settings
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STORYLOOP_DB_URL", settings.db_url)
    runner = CliRunner()
    out = runner.invoke(app, ["db", "backup", str(tmp_path / "b")])
    assert out.exit_code == 0 and "(2 judgments) and 12 images" in out.output, out.output
    again = runner.invoke(app, ["db", "restore", str(tmp_path / "b")])  # onto the live database
    assert again.exit_code == 1 and "is not empty" in again.output and "Traceback" not in again.output
    _wipe(settings.db_url)
    shutil.rmtree(settings.store_dir)
    out = runner.invoke(app, ["db", "restore", str(tmp_path / "b")])
    assert out.exit_code == 0 and "(2 judgments) and 12 images, each checked" in out.output, out.output
    bad = runner.invoke(app, ["db", "restore", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1 and "no manifest.json; not a storyloop backup" in bad.output
