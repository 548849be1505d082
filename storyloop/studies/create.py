"""`storyloop study create`: a study's arms, scenarios and items, validated in full before anything is written.

Scenarios come from an existing round, or from a scenarios file (the JSONL of `round create`, checked and
stored by the same code into a round named `study-<name>`). A folder arm's images are matched by file name:
`<scenario id>.<ext>` (one seed) or `<scenario id>_<seed index>.<ext>`, and re-encoded as bare PNGs
(studies/images.py) before they enter the store. Items are made here too, in a shuffled order:
pairwise, one per (scenario, seed index, pair of arms); Likert, one per (story, seed index, arm).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db import audit
from storyloop.db.assets import EXTENSIONS, ImageError, inspect_bytes, inspect_image, put_image
from storyloop.db.models import (ArmKind, Asset, Round, Scenario, SkipPolicy, Study, StudyArm, StudyImage,
                                 StudyItem, StudyKind)
from storyloop.db.rounds import create_round, get_round, read_scenarios_file
from storyloop.studies.arms import ArmSpec
from storyloop.studies.errors import StudyError
from storyloop.studies.images import clean_png

IMAGE_SUFFIXES = {"." + e for e in EXTENSIONS.values()} | {".jpeg", ".tif"}


@dataclass(frozen=True)
class StudyOptions:
    """The knobs of `study create` besides its arms and scenarios."""

    kind: StudyKind = StudyKind.pairwise
    seeds: int = 1  # images per (arm, scenario); seed index i is the same seed in every model arm
    answers_per_item: int = 3  # k
    gold_rate: float = 0.0
    skip_policy: SkipPolicy = SkipPolicy.others
    base_seed: int = 0

    def check(self) -> None:
        if self.seeds < 1 or self.answers_per_item < 1:
            raise StudyError("--seeds and -k must be at least 1")
        if not 0 <= self.gold_rate <= 1:
            raise StudyError("the gold rate must be between 0 and 1")


@dataclass
class CreateSummary:
    study: str
    round: str
    kind: StudyKind
    arms: list[str]
    scenarios: int
    items: int
    folder_images: int = 0
    new_assets: int = 0
    round_created: bool = False
    problems: list[str] = field(default_factory=list)


def study_round_name(study: str) -> str:
    return f"study-{study}"


@dataclass(frozen=True)
class _ScenarioRef:
    key: str
    story_id: str
    frame_index: int


def create_study(session: Session, store_dir: Path, name: str, arms: list[ArmSpec], *, round_name: str | None = None,
                 scenarios_file: Path | None = None, options: StudyOptions = StudyOptions(),
                 created_by: int | None = None) -> CreateSummary:
    """Create study `name`; every check runs before the first write, so a StudyError leaves nothing behind."""
    options = StudyOptions(**{**options.__dict__, "kind": StudyKind(options.kind)})
    options.check()
    name = name.strip()
    if not name or len(name) > 120:
        raise StudyError("a study name is 1-120 characters")
    if (round_name is None) == (scenarios_file is None):
        raise StudyError("give the study's scenarios: either --round R or --scenarios FILE")
    if session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise StudyError(f"a study named {name!r} already exists")
    needed = 2 if options.kind is StudyKind.pairwise else 1
    if len(arms) < needed:
        raise StudyError(f"a {options.kind.value} study needs at least {needed} arm(s), got {len(arms)}")
    if len({a.name for a in arms}) != len(arms):
        raise StudyError("two arms share a name: each arm needs its own name")
    arm_columns = [arm.columns() for arm in arms]  # LoRAs exist and are hashed

    if round_name is not None:
        rnd = get_round(session, round_name)
        scenarios = [_ScenarioRef(sc.key, sc.story_id, sc.frame_index) for sc in rnd.scenarios]
        where = f"round {round_name!r}"
    else:
        round_name = study_round_name(name)
        if session.scalar(select(Round.id).where(Round.name == round_name)) is not None:
            raise StudyError(f"round {round_name!r} already exists: pass --round {round_name} to use its scenarios")
        lines = read_scenarios_file(scenarios_file)  # every line and image checked; nothing written
        scenarios = [_ScenarioRef(v.line.id, v.line.story_id, v.line.frame_index) for v in lines]
        where = f"scenarios file {scenarios_file}"
    if not scenarios:
        raise StudyError(f"{where} has no scenarios: a study needs at least one")
    scenarios.sort(key=lambda s: (s.story_id, s.frame_index, s.key))
    folder_files = {arm.name: _match_folder(arm, scenarios, options.seeds) for arm in arms
                    if arm.kind is ArmKind.folder}

    # -- every check passed: write ------------------------------------------------------------------------
    summary = CreateSummary(name, round_name, options.kind, [a.name for a in arms], len(scenarios), 0,
                            round_created=scenarios_file is not None)
    if scenarios_file is not None:
        create_round(session, store_dir, round_name, scenarios_file, judgments_per_scenario=options.answers_per_item)
    rnd = get_round(session, round_name)
    by_key = {sc.key: sc for sc in session.scalars(select(Scenario).where(Scenario.round_id == rnd.id))}
    study = Study(name=name, kind=options.kind, answers_per_item=options.answers_per_item, seeds=options.seeds,
                  base_seed=options.base_seed, round_id=rnd.id, gold_rate=options.gold_rate,
                  skip_policy=options.skip_policy, created_by=created_by)
    session.add(study)
    audit.record(session, "study_created", actor_id=created_by, target=name,
                 details={"kind": StudyKind(options.kind).value, "round": round_name, "arms": [a.name for a in arms]})
    rows = [StudyArm(study=study, **cols) for cols in arm_columns]
    session.add_all(rows)
    session.flush()
    known = set(session.scalars(select(Asset.sha256)))
    for arm, row in zip(arms, rows):
        for (key, seed_index), path in folder_files.get(arm.name, {}).items():
            info = inspect_bytes(clean_png(Image.open(path)), str(path))
            summary.new_assets += info.sha256 not in known
            known.add(info.sha256)
            session.add(StudyImage(arm_id=row.id, scenario_id=by_key[key].id, seed_index=seed_index,
                                   asset=put_image(session, store_dir, info),
                                   params={"source": "folder", "file": path.name}))
            summary.folder_images += 1
    items = _items(study, rows, scenarios, by_key, options)
    session.add_all(items)
    session.flush()
    summary.items = len(items)
    return summary


def _items(study: Study, arms: list[StudyArm], scenarios: list[_ScenarioRef], by_key: dict[str, Scenario],
           options: StudyOptions) -> list[StudyItem]:
    """Every item, in a shuffled order (seeded by the study's name, so re-creating it gives the same one).
    Keys name arms by their place in --arm, never by name: a key may reach a log an annotator sees."""
    items = []
    if options.kind is StudyKind.pairwise:
        for sc, seed in itertools.product(scenarios, range(options.seeds)):
            for (i, a), (j, b) in itertools.combinations(enumerate(arms), 2):
                items.append(StudyItem(study=study, key=f"{sc.key}|seed{seed}|arms{i}-{j}", scenario_id=by_key[sc.key].id,
                                       seed_index=seed, arm_a_id=a.id, arm_b_id=b.id))
    else:
        stories = list(dict.fromkeys(sc.story_id for sc in scenarios))
        for story, seed in itertools.product(stories, range(options.seeds)):
            for i, a in enumerate(arms):
                items.append(StudyItem(study=study, key=f"{story}|seed{seed}|arm{i}", story_id=story, seed_index=seed,
                                       arm_a_id=a.id))
    order = list(range(len(items)))
    random.Random(f"study:{study.name}").shuffle(order)
    for item, position in zip(items, order):
        item.position = position
    return items


def _match_folder(arm: ArmSpec, scenarios: list[_ScenarioRef], seeds: int) -> dict[tuple[str, int], Path]:
    """(scenario key, seed index) -> the arm's image file, every one decoded in full; a StudyError listing
    every missing, ambiguous or unreadable image otherwise."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(arm.folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    found, problems = {}, []
    for sc, seed in itertools.product(scenarios, range(seeds)):
        stems = [sc.key, f"{sc.key}_{seed}"] if seeds == 1 else [f"{sc.key}_{seed}"]
        paths = [p for stem in stems for p in by_stem.get(stem, [])]
        what = f"scenario {sc.key!r}" + (f" seed {seed}" if seeds > 1 else "")
        if not paths:
            problems.append(f"no image for {what} (expected {' or '.join(s + '.png' for s in stems)})")
            continue
        if len(paths) > 1:
            problems.append(f"{len(paths)} images for {what}: {', '.join(p.name for p in paths)}")
            continue
        try:
            inspect_image(paths[0])  # decodes in full: a truncated file fails here
        except ImageError as exc:
            problems.append(str(exc))
            continue
        found[(sc.key, seed)] = paths[0]
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise StudyError(f"arm {arm.name!r} ({arm.folder}): {len(problems)} problem(s), nothing was created:\n"
                         f"{shown}{more}")
    return found
