"""What the study pages show: the studies an annotator can answer, and an item's images as bytes.

Nothing here names an arm: frames are fitted to one size (thumbs.fitted) and handed over as JPEG bytes,
which Streamlit serves under a hash of those bytes; the arms stay in the task, server-side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.annotator.thumbs import REFERENCE_PX, fitted, thumbnail, thumbs_dir
from storyloop.db.models import Study, StudyKind
from storyloop.settings import Settings
from storyloop.studies.queue import StudyTask, study_progress, task_view

PAIR_PX = 1024  # the two pairwise frames: larger than any reference is shown
STORY_PX = 640  # each frame of a Likert story


@dataclass(frozen=True)
class OpenStudy:
    study_id: int
    name: str
    kind: StudyKind
    left_for_me: int


def open_studies(session: Session, user_id: int) -> list[OpenStudy]:
    """Every study, newest first, with how many items are left for this annotator."""
    out = []
    for study in session.scalars(select(Study).order_by(Study.created_at.desc(), Study.id.desc())):
        progress = study_progress(session, user_id, study.id)
        out.append(OpenStudy(study.id, study.name, StudyKind(study.kind), progress.left_for_me))
    return out


def pick_study(studies: list[OpenStudy], current: int | None) -> int | None:
    """The study to show: the one chosen before while it exists, else the newest with work left for the
    annotator, else the newest; None when there is no study."""
    ids = [s.study_id for s in studies]
    if current in ids:
        return current
    with_work = [s.study_id for s in studies if s.left_for_me]
    return (with_work or ids or [None])[0]


@dataclass(frozen=True)
class ShownFrame:
    prompt: str
    references: list[bytes | None]  # None: missing from the store
    image: bytes | None = None  # Likert: the arm's frame


@dataclass(frozen=True)
class ShownItem:
    kind: StudyKind
    frames: list[ShownFrame]
    left: bytes | None = None  # pairwise
    right: bytes | None = None

    @property
    def references(self) -> list[bytes | None]:
        """The references of every frame, each once, in order (a story's frames share theirs)."""
        seen, out = set(), []
        for frame in self.frames:
            for ref in frame.references:
                if ref not in seen:
                    seen.add(ref)
                    out.append(ref)
        return out

    @property
    def missing(self) -> int:
        images = [self.left, self.right] if self.kind is StudyKind.pairwise else [f.image for f in self.frames]
        return sum(1 for im in images if im is None)


def shown_item(session: Session, settings: Settings, task: StudyTask) -> ShownItem:
    view = task_view(session, settings.store_dir, task)
    cache = thumbs_dir(settings.data_dir)

    def frame_bytes(path: Path | None, px: int) -> bytes | None:
        return None if path is None else fitted(path, cache, px)

    frames = [ShownFrame(f.prompt, [thumbnail(r, cache, REFERENCE_PX) for r in f.references],
                         frame_bytes(f.image, STORY_PX)) for f in view.frames]
    if view.kind is StudyKind.pairwise:
        return ShownItem(view.kind, frames, frame_bytes(view.left, PAIR_PX), frame_bytes(view.right, PAIR_PX))
    return ShownItem(view.kind, frames)
