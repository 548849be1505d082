"""Whose references are whose: a scenario's references belong to characters.

References come either as one flat list (one unnamed character) or as a mapping from a character's
name to that character's images. Either way they become one list of slots, and the slot order is
the order written: characters in the order they appear, each character's images in their order.
That order is recorded (it selects each reference's GSA position ids), so the same file always
gives the same slots. Used by the round import, the pipeline and the ViStoryBench bridge alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_NAME = 128


@dataclass(frozen=True)
class Slot(Generic[T]):
    """One reference slot: its character (None for an unnamed one) and the image (or path, or asset)."""

    character: str | None
    item: T


def slots(references: Sequence[T] | Mapping[str, Sequence[T]] | None) -> list[Slot[T]]:
    """References in slot order. A list is one unnamed character; a mapping names each character.

    Raises ValueError naming the character when a name is empty or too long or has no images."""
    if references is None:
        return []
    if isinstance(references, Mapping):
        out: list[Slot[T]] = []
        for name, items in references.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"a character name must be a non-empty string (got {name!r})")
            if len(name) > MAX_NAME:
                raise ValueError(f"character name {name[:40]!r}… is longer than {MAX_NAME} characters")
            if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
                raise ValueError(f"character {name!r}: expected a list of images, got {type(items).__name__}")
            if not items:
                raise ValueError(f"character {name!r} has no reference images")
            out += [Slot(name.strip(), item) for item in items]
        return out
    if isinstance(references, (str, bytes)):
        raise ValueError("references must be a list of images or a mapping of character name to images")
    return [Slot(None, item) for item in references]


def grouped(items: Sequence[Slot[T]]) -> dict[str | None, list[T]]:
    """Slots grouped by character, characters in order of their first slot."""
    out: dict[str | None, list[T]] = {}
    for s in items:
        out.setdefault(s.character, []).append(s.item)
    return out


def named(items: Sequence[Slot[T]]) -> bool:
    """Whether any slot names its character (else the references are one unnamed character's)."""
    return any(s.character is not None for s in items)
