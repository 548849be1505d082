"""Thumbnails of store images: made once, kept on disk beside the store and in memory.

A 1024² PNG is a few MB; the grid shows eight of them at a few hundred pixels, so the page sends
small JPEGs and keeps the original for the zoom. Small images are scaled up by whole factors (pixel-art
sharp), so every candidate is judged at the page's size, whatever its own. Store files are named by their sha256, so a
thumbnail never goes stale.
"""

from __future__ import annotations

import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image

GRID_PX = 512  # candidate cards
REFERENCE_PX = 768  # reference images, shown large
ZOOM_PX = 1536  # the zoom: a small image grows to fill the window; a large one is shown as it is


def thumbs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache" / "thumbs"


def thumbnail(source: Path, cache_dir: Path, max_px: int) -> bytes | None:
    """JPEG bytes of `source` fitted into max_px², or None when the source is missing or unreadable."""
    try:
        return _thumbnail(Path(source), Path(cache_dir), max_px)
    except (OSError, SyntaxError, ValueError):
        return None  # not cached: an image restored to the store shows up on the next run


@lru_cache(maxsize=1024)
def _thumbnail(source: Path, cache_dir: Path, max_px: int) -> bytes:
    return _jpeg_on_disk(source, cache_dir / f"{source.stem}-px{max_px}.jpg", lambda img: display_size(img, max_px))


def display_size(img: Image.Image, max_px: int) -> Image.Image:
    """`img` brought to about max_px on its longer side, in RGB: a larger image shrinks smoothly to exactly
    max_px; a smaller one grows by the largest whole factor that fits (to between max_px / 2 and max_px),
    each pixel a sharp square, so a 64² candidate is judged as large as a 1024² one and looks like itself."""
    img = img.convert("RGB")
    longer = max(img.size)
    if longer >= max_px:
        img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
        return img
    factor = max_px // longer
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST) if factor > 1 else img


def fitted(source: Path, cache_dir: Path, px: int) -> bytes | None:
    """JPEG bytes of `source` scaled, up or down, so that its longer side is exactly `px`; None when the
    source is missing or unreadable. The study pages show every arm's frame this way: the bytes and the
    size on the page then say nothing of an arm's native resolution."""
    try:
        return _fitted(Path(source), Path(cache_dir), px)
    except (OSError, SyntaxError, ValueError):
        return None


@lru_cache(maxsize=256)
def _fitted(source: Path, cache_dir: Path, px: int) -> bytes:
    def fit(img: Image.Image) -> Image.Image:
        scale = px / max(img.size)
        return img.convert("RGB").resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                         Image.Resampling.LANCZOS)

    return _jpeg_on_disk(source, cache_dir / f"{source.stem}-fit{px}.jpg", fit)


def _jpeg_on_disk(source: Path, cached: Path, transform) -> bytes:
    """`cached`'s bytes, else `transform(source)` (an RGB image) as a JPEG, written there (atomically) and
    returned."""
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    with Image.open(source) as img:
        img.load()
        out = transform(img)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=88)
    data = buf.getvalue()
    _write_atomically(cached, data)
    return data


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".thumb-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only data dir only costs speed: the thumbnail is rebuilt in the next process
