"""A ViStoryBench split as a storyloop round: one scenario per shot, all or nothing.

The scenarios go through the same checks and the same write as `storyloop round create`
(storyloop/db/rounds.py): every image is inspected and every conflict found before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import Round
from storyloop.db.rounds import ImportSummary, ModelSpec, RoundError, ScenarioChecker, create_round
from storyloop.vistory.dataset import (EVALUATOR_COMMIT, EVALUATOR_REPO, PROMPT_TEMPLATE, Frame, read_dataset)

BENCHMARK = "vistorybench"
# What must agree for a round to be extended by a second import (more stories); the folder may have moved.
SOURCE_KEYS = ("benchmark", "split", "language", "refs_per_character", "prompt_template")


@dataclass(frozen=True)
class ImportOptions:
    """What `storyloop vistory import` takes of the dataset."""

    split: str = "full"  # full: every numeric story folder; lite: the 20 Lite stories
    language: str = "en"  # en or ch: the text the prompts are built from
    stories: tuple[str, ...] | None = None  # only these stories (of the split)
    refs_per_character: int | None = None  # at most this many images per character; None: all


@dataclass
class VistoryImportSummary:
    rounds: ImportSummary
    stories: list[str]
    split: str
    split_size: int  # stories of the split present in the dataset
    frames: int


def scenario_key(frame: Frame) -> str:
    """A shot's scenario id: story and shot, e.g. 01-03."""
    return f"{frame.story_id}-{frame.frame_index:02d}"


def import_dataset(session: Session, store_dir: Path, dataset_dir: Path, round_name: str,
                   options: ImportOptions = ImportOptions(), spec: ModelSpec | None = None,
                   judgments_per_scenario: int = 3) -> VistoryImportSummary:
    """Create (or extend with more stories) round `round_name` from a ViStoryBench dataset folder."""
    found = read_dataset(dataset_dir, options.split, options.language, options.stories, options.refs_per_character)
    source = {"benchmark": BENCHMARK, "dataset": str(found.root.resolve()), "split": options.split,
              "language": options.language, "refs_per_character": options.refs_per_character,
              "prompt_template": PROMPT_TEMPLATE, "evaluator": f"{EVALUATOR_REPO}@{EVALUATOR_COMMIT}"}
    existing = session.scalar(select(Round).where(Round.name == round_name))
    if existing is not None:
        _check_same_source(existing, source)
    checker = ScenarioChecker(found.root)
    for frame in found.frames:
        checker.add(f"story {frame.story_id} shot {frame.frame_index}",
                    {"id": scenario_key(frame), "story_id": frame.story_id, "frame_index": frame.frame_index,
                     "prompt": frame.prompt,
                     "references": {name: [str(p) for p in paths] for name, paths in frame.references.items()}})
    scenarios = checker.result(found.root)
    summary = create_round(session, store_dir, round_name, spec=spec, judgments_per_scenario=judgments_per_scenario,
                           scenarios=scenarios, source=source)
    return VistoryImportSummary(summary, found.stories, options.split, found.split_size, len(found.frames))


def vistory_source(rnd: Round) -> dict:
    """The round's ViStoryBench import record, or a RoundError saying the round was not imported from it."""
    if not rnd.source or rnd.source.get("benchmark") != BENCHMARK:
        raise RoundError(f"round {rnd.name!r} was not imported from ViStoryBench (storyloop vistory import): "
                         "its scenarios are not the benchmark's stories and shots")
    return rnd.source


def _check_same_source(rnd: Round, source: dict) -> None:
    theirs = rnd.source or {}
    if theirs.get("benchmark") != BENCHMARK:
        raise RoundError(f"round {rnd.name!r} already exists and was not imported from ViStoryBench: "
                         "choose another --round")
    differing = [k for k in SOURCE_KEYS if theirs.get(k) != source[k]]
    if differing:
        said = ", ".join(f"{k} {theirs.get(k)!r}" for k in differing)
        raise RoundError(f"round {rnd.name!r} was imported with {said}: import into another --round, or with "
                         "the same options")
