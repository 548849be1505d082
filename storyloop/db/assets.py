"""The content-addressed image store: one file per distinct image, named by its sha256."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storyloop.db.models import Asset

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


class ImageError(ValueError):
    """A file that is missing, unreadable, or not an image we can store."""


@dataclass(frozen=True)
class ImageInfo:
    """What we know of an image file before it enters the store."""

    source: Path | None  # the file to copy in, or None when `data` holds the bytes
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else Path(self.source).read_bytes()


def inspect_image(path: Path) -> ImageInfo:
    """Hash and decode `path` fully (a truncated file fails here, not in the annotator)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _inspect(data, str(path), source=path)


def inspect_bytes(data: bytes, name: str = "image") -> ImageInfo:
    """As inspect_image, for an encoded image held in memory (a generated candidate)."""
    return _inspect(data, name, source=None)


def _inspect(data: bytes, name: str, source: Path | None) -> ImageInfo:
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        # Pillow warns above MAX_IMAGE_PIXELS and raises DecompressionBombError (not an OSError) above twice
        # that: both are refused before the pixels are decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                width, height, fmt = img.width, img.height, img.format
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: decompression bomb refused ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    if fmt not in EXTENSIONS:
        raise ImageError(f"{name}: image format {fmt} is not supported (use one of {', '.join(EXTENSIONS)})")
    return ImageInfo(source, hashlib.sha256(data).hexdigest(), width, height, fmt, len(data),
                     data=None if source is not None else data)


def store_path(store_dir: Path, sha256: str, fmt: str) -> Path:
    return Path(store_dir) / sha256[:2] / sha256[2:4] / f"{sha256}.{EXTENSIONS[fmt]}"


def asset_path(store_dir: Path, asset: Asset) -> Path:
    return store_path(store_dir, asset.sha256, asset.format)


def _write_once(dest: Path, info: ImageInfo) -> None:
    """Write the image to `dest` atomically; an existing `dest` already holds the same bytes."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(info.read())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def put_image(session: Session, store_dir: Path, info: ImageInfo) -> Asset:
    """The asset for `info`, adding the file and the row only if this content is new."""
    _write_once(store_path(store_dir, info.sha256, info.format), info)
    existing = session.scalar(select(Asset).where(Asset.sha256 == info.sha256))
    if existing is not None:
        return existing
    asset = Asset(sha256=info.sha256, width=info.width, height=info.height,
                  format=info.format, size_bytes=info.size_bytes)
    try:
        with session.begin_nested():  # another writer may have added the same content meanwhile
            session.add(asset)
    except IntegrityError:
        return session.scalar(select(Asset).where(Asset.sha256 == info.sha256))
    return asset


def add_image_file(session: Session, store_dir: Path, path: Path) -> Asset:
    return put_image(session, store_dir, inspect_image(path))
