"""Write a Stage-1 dataset (metadata.jsonl of group, image, caption + images) all at once or not at all."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from storyloop.data.report import Report


class DatasetExists(FileExistsError):
    pass


class NoGroups(RuntimeError):
    """The funnel ended empty: nothing is written. The report says which stage emptied it."""

    def __init__(self, report: Report):
        empty = next((stage for stage, left in report.counts.items() if left == 0), "groups")
        super().__init__(f"no groups: nothing left after the {empty!r} stage (see the table); nothing written")
        self.report = report


@dataclass
class Frame:
    image: Path  # a PNG to copy in (usually from the stage cache)
    caption: str = ""
    source: str = ""  # where it came from, e.g. "books/fox.pdf#page=12" or "clips/a.mp4@frame=240"
    extra: dict = field(default_factory=dict)  # more columns, e.g. a detection box

    @property
    def key(self) -> str:
        """The sha256 of the image's PNG bytes (StageCache.put_image names files by it)."""
        return Path(self.image).stem


@dataclass
class Group:
    name: str
    frames: list[Frame]


def slug(text: str) -> str:
    """A file-name-safe form of a group name (letters, digits, - and _)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "group"


def write_dataset(out: Path, groups: list[Group], report: Report, overwrite: bool = False) -> Path:
    """Fill a temporary folder next to `out`, then rename it into place: a crash leaves no half dataset.

    Rows are `{"group", "image", "caption", "source", ...extra}`; `generate train-stage1 --dataset` reads
    group, image and caption. report.json goes in too.
    """
    out = Path(out)
    if not groups:
        raise NoGroups(report)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetExists(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        rows, used = [], set()
        for group in groups:
            folder = slug(group.name)
            while folder in used:
                folder += "_"
            used.add(folder)
            (tmp / "images" / folder).mkdir(parents=True)
            for i, frame in enumerate(group.frames):
                rel = f"images/{folder}/{i:04d}.png"
                shutil.copyfile(frame.image, tmp / rel)
                rows.append({"group": group.name, "image": rel, "caption": frame.caption, "source": frame.source,
                             **frame.extra})
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        (tmp / "report.json").write_text(report.to_json())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
