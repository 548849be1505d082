"""Rounds and their scenarios: all-or-nothing import (from a JSONL file, or from scenarios built in memory by
a bridge such as storyloop/vistory), listing, inspection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storyloop.characters import slots
from storyloop.db.assets import ImageError, ImageInfo, inspect_image, put_image
from storyloop.db.models import Asset, Candidate, Judgment, Round, Scenario, ScenarioReference
from storyloop.hashing import sha256_path


class RoundError(ValueError):
    """A round operation that cannot be carried out; nothing was written."""


class ImportValidationError(RoundError):
    """The scenarios have problems; `problems` lists each with where it is (a line, a story and shot)."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path, self.problems = path, problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was imported:\n{shown}{more}")


class ScenarioLine(BaseModel):
    """One line of a scenarios file. Image paths are relative to the file's folder.

    `references` is a list of paths (one unnamed character) or a mapping from character name to that
    character's paths; slots follow the order written (see storyloop/characters.py)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=256)
    story_id: str = Field(min_length=1, max_length=256)
    frame_index: int = Field(ge=0)
    prompt: str = Field(min_length=1)
    references: list[str] | dict[str, list[str]] = Field(default_factory=list)
    candidates: list[str] = Field(default_factory=list)


@dataclass
class ValidScenario:
    where: str  # how errors name it: "line 3" in a file, "story 01 shot 2" from ViStoryBench
    line: ScenarioLine
    references: list[ImageInfo]
    candidates: list[ImageInfo]
    characters: list[str | None] = field(default_factory=list)  # each reference's character, in slot order


@dataclass
class ModelSpec:
    """What generates a round's candidates; LoRA hashes are computed from the files."""

    base_model: str | None = None
    stage1_lora: Path | None = None
    dpo_lora: Path | None = None

    def columns(self) -> dict:
        cols: dict = {"base_model": self.base_model}
        for name, path in (("stage1_lora", self.stage1_lora), ("dpo_lora", self.dpo_lora)):
            if path is not None and not Path(path).exists():
                raise RoundError(f"{name.replace('_', '-')} {path}: no such file or folder")
            cols[f"{name}_path"] = str(Path(path).resolve()) if path else None
            cols[f"{name}_sha256"] = sha256_path(path) if path else None
        return cols


@dataclass
class ImportSummary:
    round_name: str
    round_created: bool
    scenarios_added: int = 0
    scenarios_unchanged: int = 0
    references: int = 0
    candidates: int = 0
    new_assets: int = 0
    story_ids: set[str] = field(default_factory=set)


def read_scenarios_file(path: Path) -> list[ValidScenario]:
    """Parse and validate every line and every image; raise ImportValidationError listing all problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoundError(f"{path}: cannot read scenarios file ({exc})") from None
    checker = ScenarioChecker(path.parent)
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            checker.problems.append(f"line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            checker.problems.append(f"line {line_no}: expected a JSON object, got {type(obj).__name__}")
            continue
        checker.add(f"line {line_no}", obj)
    return checker.result(path)


class ScenarioChecker:
    """Validates scenarios one by one (each field, each image) and collects every problem, in order.

    Image paths are relative to `base_dir`, or absolute. A file reads its lines into one; a bridge that builds
    scenarios in memory (storyloop/vistory) adds its objects with its own `where` ("story 01 shot 2")."""

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir)
        self.problems: list[str] = []
        self.valid: list[ValidScenario] = []
        self._seen_ids: dict[str, str] = {}
        self._images: dict[Path, ImageInfo | str] = {}  # each file inspected once, even if used many times

    def _image(self, where: str, what: str, rel: str) -> ImageInfo | None:
        resolved = (self.base_dir / rel).resolve()
        if resolved not in self._images:
            try:
                self._images[resolved] = inspect_image(resolved)
            except ImageError as exc:
                self._images[resolved] = str(exc)
        result = self._images[resolved]
        if isinstance(result, str):
            self.problems.append(f"{where}: {what} {rel!r}: {result.split(': ', 1)[-1]}")
            return None
        return result

    def add(self, where: str, obj: dict) -> None:
        try:
            line = ScenarioLine.model_validate(obj)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "line"
                self.problems.append(f"{where}: field {loc!r}: {err['msg']}")
            return
        if line.id in self._seen_ids:
            self.problems.append(f"{where}: duplicate id {line.id!r} (first on {self._seen_ids[line.id]})")
            return
        self._seen_ids[line.id] = where
        try:
            ref_slots = slots(line.references)
        except ValueError as exc:
            self.problems.append(f"{where}: field 'references': {exc}")
            return
        refs = [self._image(where, _slot_name(ref_slots, i), s.item) for i, s in enumerate(ref_slots)]
        cands = [self._image(where, f"candidates[{i}]", c) for i, c in enumerate(line.candidates)]
        if None in refs or None in cands:
            return
        shas = [c.sha256 for c in cands]
        for i, sha in enumerate(shas):
            if sha in shas[:i]:
                self.problems.append(f"{where}: candidates[{i}] is the same image as candidates[{shas.index(sha)}]")
        self.valid.append(ValidScenario(where, line, refs, cands, [s.character for s in ref_slots]))

    def result(self, source: Path | str) -> list[ValidScenario]:
        """The valid scenarios, or ImportValidationError naming `source` and listing every problem."""
        if self.problems:
            raise ImportValidationError(source, self.problems)
        return self.valid


def _slot_name(ref_slots, i: int) -> str:
    """How an error names reference slot i: references[2] in a list, references['Tom'][1] in a mapping."""
    character = ref_slots[i].character
    if character is None:
        return f"references[{i}]"
    within = sum(1 for s in ref_slots[:i] if s.character == character)
    return f"references[{character!r}][{within}]"


def _same_scenario(existing: Scenario, item: ValidScenario) -> bool:
    return (existing.story_id == item.line.story_id
            and existing.frame_index == item.line.frame_index
            and existing.prompt == item.line.prompt
            and [r.asset.sha256 for r in existing.references] == [r.sha256 for r in item.references]
            and [r.character for r in existing.references] == item.characters
            and [c.asset.sha256 for c in existing.candidates] == [c.sha256 for c in item.candidates])


def create_round(session: Session, store_dir: Path, name: str, scenarios_file: Path | None = None,
                 parent: str | None = None, spec: ModelSpec | None = None,
                 judgments_per_scenario: int = 3, *, scenarios: list[ValidScenario] | None = None,
                 source: dict | None = None) -> ImportSummary:
    """Create round `name` (or extend it) with the scenarios of `scenarios_file`, or with `scenarios` already
    validated by a ScenarioChecker (a bridge that builds them in memory). `source` says where a new round's
    scenarios came from (Round.source); an existing round keeps its own, its caller checks they agree.

    Everything is validated before anything is written. Re-importing the same file is a no-op;
    a scenario id that exists with different content is an error.
    """
    if scenarios_file is not None and scenarios is not None:
        raise RoundError("give a scenarios file or scenarios, not both")
    items = read_scenarios_file(scenarios_file) if scenarios_file else list(scenarios or [])
    origin = scenarios_file if scenarios_file is not None else f"round {name!r}"
    spec_cols = (spec or ModelSpec()).columns()
    parent_round = None
    if parent is not None:
        parent_round = session.scalar(select(Round).where(Round.name == parent))
        if parent_round is None:
            raise RoundError(f"parent round {parent!r} does not exist")

    rnd = session.scalar(select(Round).where(Round.name == name))
    summary = ImportSummary(round_name=name, round_created=rnd is None)
    if rnd is None:
        rnd = Round(name=name, parent=parent_round, judgments_per_scenario=judgments_per_scenario, source=source,
                    **spec_cols)
        session.add(rnd)
        session.flush()
    else:
        if parent is not None and rnd.parent_id != parent_round.id:
            raise RoundError(f"round {name!r} already exists with another parent")
        given = {k: v for k, v in spec_cols.items() if v is not None}
        differing = [k for k, v in given.items() if getattr(rnd, k) != v]
        if differing:
            raise RoundError(f"round {name!r} already exists with a different {', '.join(differing)}")

    existing = {s.key: s for s in session.scalars(select(Scenario).where(Scenario.round_id == rnd.id))}
    conflicts = [f"{it.where}: scenario {it.line.id!r} already exists in round {name!r} "
                 "with different content" for it in items
                 if it.line.id in existing and not _same_scenario(existing[it.line.id], it)]
    if conflicts:
        raise ImportValidationError(origin, conflicts)

    known = set(session.scalars(select(Asset.sha256)))
    for it in items:
        summary.story_ids.add(it.line.story_id)
        if it.line.id in existing:
            summary.scenarios_unchanged += 1
            continue
        scenario = Scenario(round=rnd, key=it.line.id, story_id=it.line.story_id,
                            frame_index=it.line.frame_index, prompt=it.line.prompt)
        session.add(scenario)
        for pos, (info, character) in enumerate(zip(it.references, it.characters)):
            scenario.references.append(ScenarioReference(position=pos, asset=put_image(session, store_dir, info),
                                                         character=character))
        for idx, info in enumerate(it.candidates):
            scenario.candidates.append(Candidate(index=idx, asset=put_image(session, store_dir, info),
                                                 params={"source": "import"}))
        new_shas = {i.sha256 for i in it.references + it.candidates} - known
        summary.new_assets += len(new_shas)
        known |= new_shas
        summary.scenarios_added += 1
        summary.references += len(it.references)
        summary.candidates += len(it.candidates)
    session.flush()
    return summary


@dataclass
class RoundOverview:
    round: Round
    scenarios: int
    candidates: int
    judgments: int


def get_round(session: Session, name: str) -> Round:
    rnd = session.scalar(select(Round).where(Round.name == name))
    if rnd is None:
        raise RoundError(f"no round named {name!r}")
    return rnd


def round_overviews(session: Session) -> list[RoundOverview]:
    def count(model, join_on):
        return (select(Scenario.round_id, func.count(model.id)).join(model, join_on)
                .group_by(Scenario.round_id))

    scen = dict(session.execute(select(Scenario.round_id, func.count()).group_by(Scenario.round_id)).all())
    cands = dict(session.execute(count(Candidate, Candidate.scenario_id == Scenario.id)).all())
    judg = dict(session.execute(count(Judgment, Judgment.scenario_id == Scenario.id)).all())
    return [RoundOverview(r, scen.get(r.id, 0), cands.get(r.id, 0), judg.get(r.id, 0))
            for r in session.scalars(select(Round).order_by(Round.id))]
