"""Backups: the database and the image store, taken together and restored together, checked both ways.

A backup is a folder of three files:

    database.pgdump   pg_dump's custom format (PostgreSQL), or database.sqlite (SQLite's online backup)
    store.tar         every image of the store (content-addressed: a file's name is its sha256)
    manifest.json     when, from which schema revision, the rows of each table, each file's sha256

The database goes first, in one snapshot whose row counts go into the manifest; the store after it, so
every image a dumped row names is in the tar (an image is written before the row that names it, and is
never changed or removed). A restore wants an empty database (a new one: `createdb`, or a new SQLite
path): it checks the files against the manifest, loads the dump, unpacks the store, and checks the result:
the same rows in every table, and every asset's file present with the bytes its sha256 names. Nothing is
loaded when a check before loading fails; a backup is written under a temporary name and renamed when done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from storyloop import __version__
from storyloop.db import audit
from storyloop.db.assets import asset_path
from storyloop.db.engine import get_engine, normalize_url, session_scope
from storyloop.db.migrate import current_revision
from storyloop.db.models import Asset, Base
from storyloop.settings import Settings

MANIFEST = "manifest.json"
STORE_TAR = "store.tar"
PG_DUMP = "database.pgdump"
SQLITE_COPY = "database.sqlite"
FORMAT = 1
_INCOMING = ".incoming-"  # a store file still being written (assets._write_once): not an image yet


class BackupError(RuntimeError):
    """A backup that cannot be taken or restored; says what to do. Nothing half-done is left behind."""


@dataclass(frozen=True)
class StoreCheck:
    assets: int  # asset rows checked
    missing: list[str] = field(default_factory=list)  # sha256 of assets without a file
    corrupt: list[str] = field(default_factory=list)  # sha256 of assets whose file holds other bytes


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_store(session: Session, store_dir: Path) -> StoreCheck:
    """Every asset row against its file in the store: present, and hashing to its sha256."""
    missing, corrupt, n = [], [], 0
    for asset in session.scalars(select(Asset).order_by(Asset.id)):
        n += 1
        path = asset_path(store_dir, asset)
        if not path.is_file():
            missing.append(asset.sha256)
        elif _sha256_file(path) != asset.sha256:
            corrupt.append(asset.sha256)
    return StoreCheck(n, missing, corrupt)


def _rows(session: Session) -> dict[str, int]:
    return {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _is_postgres(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "postgresql"


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL as pg_dump and pg_restore take it, and their environment: the password goes in PGPASSWORD,
    not on a command line anyone on the machine can read."""
    parsed = make_url(normalize_url(url))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _tool(name: str, *args: str, env: dict[str, str]) -> None:
    if shutil.which(name) is None:
        raise BackupError(f"{name} is not installed: apt-get install postgresql-client (of the server's version "
                          "or newer)")
    done = subprocess.run([name, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BackupError(f"{name} failed: {done.stderr.strip() or done.stdout.strip()}")


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url}: not a SQLite file")
    return Path(database)


# -- backup ----------------------------------------------------------------------------------------

def _dump_postgres(url: str, out: Path) -> dict[str, int]:
    """pg_dump in a snapshot exported by a transaction that counts the rows of the same snapshot."""
    conninfo, env = _libpq(url)
    with get_engine(url).connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            rows = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in Base.metadata.sorted_tables}
            _tool("pg_dump", "--format=custom", f"--snapshot={snapshot}", "--file", str(out), conninfo, env=env)
    return rows


def _copy_sqlite(url: str, out: Path) -> dict[str, int]:
    """SQLite's online backup: a consistent copy while annotators write (WAL), then counted."""
    source = sqlite3.connect(_sqlite_path(url))
    target = sqlite3.connect(out)
    try:
        source.backup(target)
        rows = {t.name: target.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0]
                for t in Base.metadata.sorted_tables}
    finally:
        target.close()
        source.close()
    return rows


def _tar_store(store_dir: Path, out: Path) -> int:
    files = 0
    with tarfile.open(out, "w") as tar:
        if store_dir.is_dir():
            for path in sorted(store_dir.rglob("*")):
                if path.is_file() and not path.name.startswith(_INCOMING):
                    tar.add(path, arcname=f"store/{path.relative_to(store_dir).as_posix()}", recursive=False)
                    files += 1
    return files


def backup(settings: Settings, dest: Path) -> dict:
    """Write a backup of the database and the image store to the new folder `dest`; its manifest."""
    dest = Path(dest)
    if dest.exists():
        raise BackupError(f"{dest} exists: give a new folder for the backup")
    revision = current_revision(settings.db_url)
    if revision is None:
        raise BackupError(f"the database at {settings.db_url} is not initialised: nothing to back up")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        postgres = _is_postgres(settings.db_url)
        database = PG_DUMP if postgres else SQLITE_COPY
        rows = (_dump_postgres if postgres else _copy_sqlite)(settings.db_url, partial / database)
        store_files = _tar_store(settings.store_dir, partial / STORE_TAR)  # after the rows: see the module
        manifest = {"format": FORMAT, "storyloop": __version__, "schema_revision": revision,
                    "database": "postgresql" if postgres else "sqlite", "rows": rows, "store_files": store_files,
                    "files": {name: _sha256_file(partial / name) for name in (database, STORE_TAR)}}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


# -- restore ---------------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict:
    """The backup's manifest, its files checked against it."""
    src = Path(src)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src}: no {MANIFEST}; not a storyloop backup") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{src / MANIFEST}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: backup format {manifest.get('format')!r}, this storyloop reads {FORMAT}")
    for name, sha256 in manifest["files"].items():
        path = src / name
        if not path.is_file():
            raise BackupError(f"{path}: missing from the backup")
        if _sha256_file(path) != sha256:
            raise BackupError(f"{path}: its contents changed since the backup was taken (sha256 differs)")
    return manifest


def _require_empty(url: str) -> None:
    tables = inspect(get_engine(url)).get_table_names()
    if tables:
        raise BackupError(f"the database at {make_url(url).render_as_string(hide_password=True)} "
                          f"is not empty ({len(tables)} tables): restore into a new one (createdb NAME, or a "
                          "new SQLite path), then point --db at it")


def _load(manifest: dict, src: Path, url: str) -> None:
    backend = "postgresql" if _is_postgres(url) else "sqlite"
    if manifest["database"] != backend:
        raise BackupError(f"this backup is of a {manifest['database']} database; --db names a {backend} one")
    if backend == "postgresql":
        _require_empty(url)
        conninfo, env = _libpq(url)
        _tool("pg_restore", "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges",
              "--dbname", conninfo, str(src / PG_DUMP), env=env)
        return
    path = _sqlite_path(url)
    if path.exists():
        _require_empty(url)
    get_engine(url).dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    source, target = sqlite3.connect(src / SQLITE_COPY), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


_STORE_MEMBER = re.compile(r"^store/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{3,4}$")


def _unpack_store(src: Path, data_dir: Path) -> None:
    with tarfile.open(src / STORE_TAR) as tar:
        members = tar.getmembers()
        # only store files, by name: nothing else can be written anywhere else (no links, no '..')
        if any(not m.isfile() or not _STORE_MEMBER.match(m.name) for m in members):
            raise BackupError(f"{src / STORE_TAR}: holds more than the image store's files")
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
        tar.extractall(data_dir, members=members, **extra)


def restore(settings: Settings, src: Path) -> dict:
    """Load the backup in `src` into the (empty) database and the data directory of `settings`, then check
    it; returns {"rows": ..., "images": checked assets}. Raises BackupError on any mismatch."""
    src = Path(src)
    manifest = read_manifest(src)
    _load(manifest, src, settings.db_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _unpack_store(src, settings.data_dir)
    if (revision := current_revision(settings.db_url)) != manifest["schema_revision"]:
        raise BackupError(f"restored schema revision {revision}, the backup says {manifest['schema_revision']}")
    with session_scope(settings.db_url) as s:
        rows = _rows(s)
        if rows != manifest["rows"]:
            differ = {t: (rows.get(t), n) for t, n in manifest["rows"].items() if rows.get(t) != n}
            raise BackupError(f"restored rows differ from the backup's (table: restored, backed up): {differ}")
        store = check_store(s, settings.store_dir)
        if store.missing or store.corrupt:
            raise BackupError(f"{len(store.missing)} image(s) missing and {len(store.corrupt)} damaged in the "
                              f"restored store {settings.store_dir}, e.g. {(store.missing + store.corrupt)[0]}")
        audit.record(s, "restored", target=str(src), details={"schema_revision": manifest["schema_revision"],
                                                              "rows": sum(rows.values()), "images": store.assets})
    return {"rows": rows, "images": store.assets}
