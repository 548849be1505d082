"""Scenarios, folder arms and accounts for the study tests, built in code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from storyloop.db import session_scope
from storyloop.db.models import Role
from storyloop.db.rounds import create_round
from storyloop.db.users import add_user
from tests.conftest import make_image, save_tiny_models

WORDS = "a the red blue fox cat reads sleeps in forest".split()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """root/flux: a tiny FLUX pipeline; root/stage1: a Stage-1 LoRA for it (built once for all study tests)."""
    return save_tiny_models(tmp_path_factory.mktemp("study-models"), WORDS)


# Two stories of two frames: scenario keys a0, a1 (story A) and b0, b1 (story B).
SCENARIOS = [("a0", "A", 0, "a red fox reads"), ("a1", "A", 1, "the fox sleeps"),
             ("b0", "B", 0, "a blue cat reads"), ("b1", "B", 1, "the cat sleeps in the forest")]


def scenarios_file(folder: Path, scenarios=SCENARIOS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    make_image(folder / "ref-A.png", (200, 60, 20), (32, 32))
    make_image(folder / "ref-B.png", (40, 40, 200), (32, 32))
    rows = [{"id": k, "story_id": s, "frame_index": f, "prompt": p, "references": [f"ref-{s}.png"]}
            for k, s, f, p in scenarios]
    path = folder / "scenarios.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def make_round(settings, folder: Path, name: str = "r1", scenarios=SCENARIOS) -> str:
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, name, scenarios_file(folder, scenarios))
    return name


def folder_arm(folder: Path, keys, seeds: int = 1, tag: str = "uno-v2", color=(10, 160, 90)) -> Path:
    """A folder of images made 'elsewhere': each carries the maker's name in a PNG text chunk and EXIF, as
    real tools write them. One seed: <key>.png; more: <key>_<i>.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, key in enumerate(keys):
        for seed in range(seeds):
            info = PngInfo()
            info.add_text("parameters", f"model: {tag}, seed {seed}")
            img = Image.new("RGB", (32, 32), (color[0], (color[1] + 20 * n) % 255, (color[2] + 40 * seed) % 255))
            exif = Image.Exif()
            exif[0x0131] = tag  # Software
            name = f"{key}.png" if seeds == 1 else f"{key}_{seed}.png"
            img.save(folder / name, pnginfo=info, exif=exif)
    return folder


def add_annotators(settings, names=("ann", "bob", "cat")) -> dict[str, int]:
    with session_scope(settings.db_url) as s:
        return {n: add_user(s, n, "password123", Role.annotator).id for n in names}


def folder_study(settings, tmp_path: Path, name: str = "st", kind: str = "pairwise", k: int = 2,
                 arm_names=("x", "y"), scenarios=SCENARIOS, extra_arms=(), **options) -> int:
    """A study over folder arms only (no generation needed), on round r1; returns its id."""
    from storyloop.db.models import Study, StudyKind
    from storyloop.studies.arms import parse_arms
    from storyloop.studies.create import StudyOptions, create_study

    if not (tmp_path / "src").exists():
        make_round(settings, tmp_path / "src", scenarios=scenarios)
    keys = [k_ for k_, *_ in scenarios]
    specs = [f"{a}={folder_arm(tmp_path / f'{name}-{a}', keys, tag=a, color=(30 * i + 10, 90, 40 * i))}"
             for i, a in enumerate(arm_names)]
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, name, parse_arms(specs + list(extra_arms)), round_name="r1",
                     options=StudyOptions(kind=StudyKind(kind), answers_per_item=k, **options))
        return s.query(Study).filter_by(name=name).one().id
