"""A stage's work kept by content hash, so that a rerun skips what is done.

Keys hash what determines a result: the input's bytes, the stage's knobs and the model's identity. Every
write is atomic (a temporary file, then a rename), so an interrupted run leaves only whole entries, and
several processes may fill the same cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def content_key(*parts) -> str:
    """sha256 of the parts as canonical JSON (bytes are hashed first)."""
    norm = [hashlib.sha256(p).hexdigest() if isinstance(p, bytes | bytearray) else p for p in parts]
    return hashlib.sha256(json.dumps(norm, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """The image as PNG, with `text` as its text chunks (written before the pixels: `Image.open(...).info` has
    them without decoding the image)."""
    buf = io.BytesIO()
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


class StageCache:
    """root/<stage>/<key[:2]>/<key>.json (a result) and .../<key>/ (files a result names)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, stage: str, key: str, suffix: str = ".json") -> Path:
        return self.root / stage / key[:2] / f"{key}{suffix}"

    def get(self, stage: str, key: str):
        """The stored result, or None when this work was never finished."""
        path = self._path(stage, key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes, unless the disk lied: redo it
            return None

    def put(self, stage: str, key: str, value) -> None:
        atomic_write(self._path(stage, key), json.dumps(value, ensure_ascii=False).encode())

    def files(self, stage: str, key: str) -> Path:
        """A folder for the files of one entry (write them before `put`, which marks the entry done)."""
        folder = self._path(stage, key, suffix="")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image_path(self, digest: str) -> Path:
        """Where put_image stores the PNG whose bytes have this sha256."""
        return self.root / "images" / digest[:2] / f"{digest}.png"

    def put_image(self, image: Image.Image) -> Path:
        """Store an image by the hash of its PNG bytes; returns its path (the same image is stored once)."""
        data = png_bytes(image)
        path = self.image_path(hashlib.sha256(data).hexdigest())
        if not path.exists():
            atomic_write(path, data)
        return path

    def cached(self, stage: str, key: str, compute):
        """get, else compute() and put."""
        value = self.get(stage, key)
        if value is None:
            value = compute()
            self.put(stage, key, value)
        return value
