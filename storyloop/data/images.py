"""Decode images defensively: a bad file is a reason to skip it, never a crash."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Above this many pixels an image is treated as a decompression bomb (Pillow's own warning limit).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class BadImage(ValueError):
    """An input that does not decode to a usable image; the message says why."""


def open_image(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image at `path`, fully decoded and in RGB, or BadImage naming the file and the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path), max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """As open_image, for encoded bytes. Catches what Pillow raises for empty, truncated, unsupported and
    bomb inputs (DecompressionBombError is not an OSError)."""
    if not data:
        raise BadImage(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise BadImage(f"{name}: decompression bomb? {width}x{height} pixels is over the "
                                   f"{max_pixels:,} limit")
                img.load()
                image = img.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"{name}: decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image in a format Pillow reads") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"{name}: not a readable image ({exc})") from None
    if image.width == 0 or image.height == 0:
        raise BadImage(f"{name}: image has no pixels")
    return image
