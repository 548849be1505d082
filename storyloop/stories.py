"""Story files as frames to draw: what `storyloop story` reads, whatever the file's format.

A reader turns a file into a list of `StoryFrame`s (story id, frame index, prompt, references as slots), and
checks every frame and every reference image before anything is drawn. One reader per format in `READERS`:
the round import's JSONL, and ViStoryBench's story.json (through storyloop/vistory/dataset.py: the baselines'
prompt template, each character's images from the story folder's image/<name>/).
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


Reader = Callable[..., list[StoryFrame]]  # (path, language) -> frames


def read_scenarios_jsonl(path: Path, language: str = "en") -> list[StoryFrame]:
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
                       f"{path} {v.where}") for v in lines]


def read_vistory_story(path: Path, language: str = "en") -> list[StoryFrame]:
    """The shots of one ViStoryBench story (its story.json, or the story folder holding it), one frame per shot
    (story id = the folder's name, frame index = the shot's index), in `language` (en or ch)."""
    from storyloop.vistory.dataset import DatasetError, story_frames

    path = Path(path)
    folder = path.parent if path.is_file() else path
    try:
        frames = story_frames(folder, language)
    except DatasetError as exc:
        raise StoryError(str(exc)) from None
    return [StoryFrame(f.story_id, f.frame_index, f.prompt,
                       [Slot(name, image) for name, images in f.references.items() for image in images],
                       f"{folder / 'story.json'} shot {f.frame_index}") for f in frames]


READERS: dict[str, Reader] = {"jsonl": read_scenarios_jsonl, "vistory": read_vistory_story}
SUFFIXES = {".jsonl": "jsonl", ".json": "vistory"}  # the format a file's suffix implies when none is named


def read_story(path: Path, fmt: str | None = None, language: str = "en") -> list[StoryFrame]:
    """The frames of `path`, read as format `fmt` (default: by the file's suffix; a folder with a story.json is a
    ViStoryBench story). `language` picks the text of formats that have two (ViStoryBench: en or ch)."""
    path = Path(path)
    if not path.exists():
        raise StoryError(f"{path}: no such story file")
    if fmt is None and path.is_dir() and (path / "story.json").is_file():
        fmt = "vistory"
    fmt = fmt or SUFFIXES.get(path.suffix.lower())
    if fmt not in READERS:
        raise StoryError(f"{path}: cannot tell its format; name one of {', '.join(READERS)}")
    frames = READERS[fmt](path, language)
    if not frames:
        raise StoryError(f"{path}: no frames to draw")
    return frames
