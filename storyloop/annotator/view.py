"""What the judging page shows for a scenario: prompt, references and candidates, with image bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from storyloop.annotator.thumbs import GRID_PX, REFERENCE_PX, ZOOM_PX, thumbnail, thumbs_dir
from storyloop.characters import Slot, grouped
from storyloop.db.assets import asset_path
from storyloop.db.models import Asset, Candidate, Scenario, ScenarioReference
from storyloop.settings import Settings


@dataclass(frozen=True)
class ShownImage:
    path: Path  # the original in the store (for the zoom)
    sha256: str
    width: int
    height: int
    thumb: bytes | None  # None: the file is missing from the store or unreadable

    @property
    def missing(self) -> bool:
        return self.thumb is None


@dataclass(frozen=True)
class ShownCandidate:
    candidate_id: int
    position: int  # 1-based place in the grid; its number key
    image: ShownImage


@dataclass(frozen=True)
class ScenarioView:
    scenario_id: int
    key: str
    story_id: str
    frame_index: int
    prompt: str
    round_name: str
    references: list[ShownImage]  # in slot order
    candidates: list[ShownCandidate]  # in the shown order
    reference_characters: tuple[str | None, ...] = ()  # each reference's character (None: unnamed)

    @property
    def missing(self) -> list[ShownCandidate]:
        return [c for c in self.candidates if c.image.missing]

    @property
    def reference_groups(self) -> list[tuple[str | None, list[ShownImage]]]:
        """References grouped under their character, characters in slot order (one unnamed group for a flat list)."""
        characters = self.reference_characters or (None,) * len(self.references)
        return list(grouped([Slot(c, r) for c, r in zip(characters, self.references)]).items())

    @property
    def characters(self) -> list[str]:
        """The named characters a candidate must keep (empty for a flat reference list)."""
        return [c for c, _ in self.reference_groups if c is not None]


def _shown(settings: Settings, asset: Asset, max_px: int) -> ShownImage:
    path = asset_path(settings.store_dir, asset)
    return ShownImage(path, asset.sha256, asset.width, asset.height,
                      thumbnail(path, thumbs_dir(settings.data_dir), max_px))


def zoom_image(settings: Settings, image: ShownImage) -> bytes:
    """What the zoom shows: the original, or for an image under half the zoom's size its whole-factor
    enlargement (pixel-art sharp), so that the zoom fills the window either way."""
    if 2 * max(image.width, image.height) > ZOOM_PX:
        return image.path.read_bytes()
    return thumbnail(image.path, thumbs_dir(settings.data_dir), ZOOM_PX) or image.path.read_bytes()


def scenario_view(session: Session, settings: Settings, scenario_id: int, shown_order: list[int]) -> ScenarioView:
    scenario = session.get(Scenario, scenario_id, options=[
        selectinload(Scenario.references).selectinload(ScenarioReference.asset),
        selectinload(Scenario.candidates).selectinload(Candidate.asset),
        selectinload(Scenario.round)])
    by_id = {c.id: c for c in scenario.candidates}
    return ScenarioView(
        scenario.id, scenario.key, scenario.story_id, scenario.frame_index, scenario.prompt, scenario.round.name,
        [_shown(settings, r.asset, REFERENCE_PX) for r in scenario.references],
        [ShownCandidate(cid, i + 1, _shown(settings, by_id[cid].asset, GRID_PX)) for i, cid in enumerate(shown_order)],
        tuple(r.character for r in scenario.references))


def gallery_view(session: Session, settings: Settings, scenario_id: int) -> ScenarioView:
    """A scenario with its candidates in generation order (for researchers, not shuffled)."""
    order = [c.id for c in session.get(Scenario, scenario_id).candidates]
    return scenario_view(session, settings, scenario_id, order)


def scenario_choices(session: Session, round_id: int) -> list[tuple[int, str]]:
    """(id, label) of the round's scenarios, in story order."""
    rows = session.execute(select(Scenario.id, Scenario.key, Scenario.prompt).where(Scenario.round_id == round_id)
                           .order_by(Scenario.story_id, Scenario.frame_index, Scenario.id)).all()
    return [(sid, f"{key} · {prompt[:60]}") for sid, key, prompt in rows]
