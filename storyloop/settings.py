"""Where storyloop keeps things: the data directory, the database URL, and a per-user cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "STORYLOOP_DATA_DIR"
DB_URL_ENV = "STORYLOOP_DB_URL"
CACHE_DIR_ENV = "STORYLOOP_CACHE_DIR"
DB_FILENAME = "storyloop.db"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "storyloop"


def cache_dir() -> Path:
    """Per-user facts about this machine's files that are cheap to lose (e.g. model fingerprints):
    $STORYLOOP_CACHE_DIR, else $XDG_CACHE_HOME/storyloop, else ~/.cache/storyloop."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "storyloop"


@dataclass(frozen=True)
class Settings:
    """The two things every command needs; resolved once from flags, then env, then defaults."""

    data_dir: Path
    db_url: str

    @property
    def store_dir(self) -> Path:
        """Content-addressed image store: store/ab/cd/<sha256>.<ext>."""
        return self.data_dir / "store"

    @classmethod
    def resolve(cls, data_dir: Path | str | None = None, db_url: str | None = None) -> Settings:
        data_dir = Path(data_dir or os.environ.get(DATA_DIR_ENV) or default_data_dir()).expanduser()
        db_url = db_url or os.environ.get(DB_URL_ENV) or f"sqlite:///{(data_dir / DB_FILENAME).resolve()}"
        return cls(data_dir=data_dir, db_url=db_url)
