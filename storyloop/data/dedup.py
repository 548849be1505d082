"""Near-duplicates by perceptual hash (pHash, via imagehash): the same page scanned twice, a static shot."""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
from PIL import Image


def phash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits (robust to rescaling and recompression)."""
    return str(imagehash.phash(image))


def distance(a: str, b: str) -> int:
    """Hamming distance between two hashes from `phash`."""
    return imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)


def keep_distinct(hashes: Sequence[str], max_distance: int) -> list[bool]:
    """Which items to keep: in order, an item is dropped when it lies within `max_distance` bits of one
    already kept (the first of a run of near-duplicates stays). Quadratic, run within one book or video."""
    parsed = [imagehash.hex_to_hash(h) for h in hashes]
    kept: list = []
    keep = []
    for h in parsed:
        dup = any(h - k <= max_distance for k in kept)
        keep.append(not dup)
        if not dup:
            kept.append(h)
    return keep


def keep_changing(hashes: Sequence[str], max_distance: int) -> list[bool]:
    """For static shots: drop an item within `max_distance` bits of the previous kept item only (a scene
    that returns later stays)."""
    keep, last = [], None
    for h in (imagehash.hex_to_hash(x) for x in hashes):
        same = last is not None and h - last <= max_distance
        keep.append(not same)
        if not same:
            last = h
    return keep
