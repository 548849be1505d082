"""Shared fixtures: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image
from sqlalchemy import create_engine, text

from storyloop.db import upgrade
from storyloop.db.engine import get_engine, normalize_url
from storyloop.settings import CACHE_DIR_ENV, Settings

PG_ENV = "STORYLOOP_TEST_PG_URL"


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory):
    """Model fingerprint memos (and any per-user cache) go to a temp dir, not the runner's ~/.cache;
    subprocesses inherit it."""
    saved = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if saved is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = saved


def _postgres_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{PG_ENV} is not set: CI must run the PostgreSQL tests (use `make test`)")
    pytest.skip(f"{PG_ENV} not set: run through `make test` to include PostgreSQL")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path):
    """An empty database, SQLite file or a fresh PostgreSQL database, dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'storyloop.db'}"
        yield url
        get_engine(url).dispose()
        return
    admin_url = normalize_url(_postgres_admin_url())
    name = f"storyloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def settings(tmp_path: Path, migrated_url: str) -> Settings:
    return Settings.resolve(data_dir=tmp_path / "data", db_url=migrated_url)


def make_image(path: Path, color=(200, 40, 40), size=(32, 24), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def save_tiny_models(root: Path, words: list[str]) -> Path:
    """root/flux: a saved tiny FLUX pipeline; root/stage1: a Stage-1 LoRA for it (random, non-zero B);
    root/other: a second base the LoRA does not fit."""
    from storyloop.generation.gsa import POSITION_SCHEME
    from storyloop.generation.lora import lora_config, save_lora
    from storyloop.generation.models import LoraMeta, base_fingerprint
    from storyloop.generation.tiny import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(words)
    pipe.save_pretrained(root / "flux")
    pipe.transformer.add_adapter(lora_config(4, 4, init="gaussian"), adapter_name="stage1")
    # peft's "gaussian" init draws A only and leaves B at zero (an identity adapter): draw B too, so the
    # LoRA changes what the model draws and tests that load it test something
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in pipe.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    save_lora(pipe.transformer, "stage1", root / "stage1",
              LoraMeta("stage1", base_fingerprint(str(root / "flux")), POSITION_SCHEME, 4, 4, 1))
    tiny_flux_pipeline(words, seed=1).save_pretrained(root / "other")
    return root


def write_groups_dataset(folder: Path) -> Path:
    """A Stage-1 dataset: 3 groups (fox, cat, owl) of 3 32x32 images, each a coloured bar that moves, and a
    metadata.jsonl of {group, image, caption}."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for animal, color in [("fox", (200, 60, 20)), ("cat", (40, 40, 200)), ("owl", (30, 160, 40))]:
        for f in range(3):
            img = Image.new("RGB", (32, 32), (240, 240, 240))
            img.paste(color, (4 + 6 * f, 8, 16 + 6 * f, 24))
            img.save(folder / f"{animal}{f}.png")
            rows.append({"group": animal, "image": f"{animal}{f}.png", "caption": f"a {animal} reads"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 8×6 PNG whose header claims width×height: a decompression bomb in about 100 bytes."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buf, format="PNG")
    png = buf.getvalue()
    data = struct.pack(">II", width, height) + png[24:29]  # the IHDR chunk's data after its size fields
    body = b"IHDR" + data
    return png[:8] + struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


@pytest.fixture(scope="module")
def _module_cluster():
    from tests.pg_cluster import PgCluster, server_bindir

    bindir = server_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server binaries: .ci/run must install postgresql")
        pytest.skip("no PostgreSQL server (apt-get install postgresql) for the fault tests")
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_cluster(_module_cluster):
    """A running server of this test module's own (skips without Debian's PostgreSQL server, fails so in CI):
    one initdb per module, started again for each test that needs it."""
    if not _module_cluster.running():
        _module_cluster.start()
    return _module_cluster
