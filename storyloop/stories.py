"""Story files as frames to draw: what `storyloop story` reads, whatever the file's format.

A reader turns a file into a list of `StoryFrame`s (story id, frame index, prompt, references as slots), and
checks every frame and every reference image before anything is drawn. One reader per format in `READERS`;
another format (ViStoryBench's story.json) plugs in as one more function of that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storyloop.characters import Slot


class StoryError(ValueError):
    """A story file that cannot be drawn; the message names the file (and line or frame)."""


@dataclass(frozen=True)
class StoryFrame:
    """One frame to draw: its references are image paths in slot order (storyloop.characters)."""

    story_id: str
    frame_index: int
    prompt: str
    references: list[Slot[Path]]
    where: str  # how errors name it: "FILE line 3"


Reader = Callable[[Path], list[StoryFrame]]


def read_scenarios_jsonl(path: Path) -> list[StoryFrame]:
    """The frames of a `round create --scenarios` JSONL file, checked by the round import's own validator
    (every line and every image: a problem anywhere refuses the whole file, each problem with its line)."""
    from storyloop.db.rounds import ImportValidationError, RoundError, read_scenarios_file

    path = Path(path)
    try:
        lines = read_scenarios_file(path)
    except ImportValidationError as exc:
        shown = "\n".join(f"  {p}" for p in exc.problems[:50])
        more = f"\n  ... and {len(exc.problems) - 50} more" if len(exc.problems) > 50 else ""
        raise StoryError(f"{path}: {len(exc.problems)} problem(s), nothing was drawn:\n{shown}{more}") from None
    except RoundError as exc:
        raise StoryError(str(exc)) from None
    return [StoryFrame(v.line.story_id, v.line.frame_index, v.line.prompt,
                       [Slot(character, info.source) for character, info in zip(v.characters, v.references)],
                       f"{path} line {v.line_no}") for v in lines]


READERS: dict[str, Reader] = {"jsonl": read_scenarios_jsonl}
SUFFIXES = {".jsonl": "jsonl"}  # the format a file's suffix implies when none is named


def read_story(path: Path, fmt: str | None = None) -> list[StoryFrame]:
    """The frames of `path`, read as format `fmt` (default: by the file's suffix)."""
    path = Path(path)
    if not path.exists():
        raise StoryError(f"{path}: no such story file")
    fmt = fmt or SUFFIXES.get(path.suffix.lower())
    if fmt not in READERS:
        raise StoryError(f"{path}: cannot tell its format; name one of {', '.join(READERS)}")
    frames = READERS[fmt](path)
    if not frames:
        raise StoryError(f"{path}: no frames to draw")
    return frames
