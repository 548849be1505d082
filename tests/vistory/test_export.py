"""`vistory export`: import → generate (tiny FLUX) → export gives exactly the evaluator's layout and names; the
winner is people's choice; every refusal writes nothing."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.assets import asset_path, inspect_bytes, put_image
from storyloop.db.models import Candidate, Role, Round, Scenario
from storyloop.db.rounds import ModelSpec, RoundError, create_round
from storyloop.db.users import add_user
from storyloop.generation.run import GenerateConfig, generate_round
from storyloop.vistory.export import MANIFEST, ExportOptions, export_round, parse_pick
from storyloop.vistory.importing import ImportOptions, import_dataset
from tests.conftest import make_image, save_tiny_models
from tests.dpo.helpers import A, C, P, judge
from tests.vistory.helpers import CAST, build_dataset

SHOT_FILES = ["01/shots/shot_01.png", "01/shots/shot_02.png", "01/shots/shot_03.png", "08/shots/shot_01.png",
              "08/shots/shot_02.png"]


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"), "close-up the park fox reads".split())


@pytest.fixture
def dataset(tmp_path):
    return build_dataset(tmp_path / "data")


def imported(settings, dataset, name="vb", language="en", spec=None):
    with session_scope(settings.db_url) as s:
        import_dataset(s, settings.store_dir, dataset, name, ImportOptions(language=language), spec)
    return name


def add_candidates(settings, name, per_scenario=2, fmt="PNG"):
    """Distinct candidate images for every scenario (as `generate run` would store them, without the model)."""
    with session_scope(settings.db_url) as s:
        rnd = s.scalar(select(Round).where(Round.name == name))
        for n, sc in enumerate(rnd.scenarios):
            for k in range(per_scenario):
                buf = io.BytesIO()
                Image.new("RGB", (24, 16), (10 * n, 100 + 60 * k, 7)).save(buf, format=fmt)
                asset = put_image(s, settings.store_dir, inspect_bytes(buf.getvalue()))
                sc.candidates.append(Candidate(index=k, asset=asset, params={"source": "test"}))


def tree(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def export(settings, out, name="vb", **options):
    options = {"method": "storyloop", "timestamp": "20260102_030405", **options}
    with session_scope(settings.db_url) as s:
        return export_round(s, settings.store_dir, name, out, ExportOptions(**options))


def evaluator_reads(ts_dir):
    """What ViStoryBench's read_outputs (at 514cc31) finds: story folders as integers, each shot's index as the
    number after the last '_' of its file name under shots/."""
    found = {}
    for story in sorted((d for d in ts_dir.iterdir() if d.is_dir()), key=lambda d: int(d.name)):
        shots = story / "shots"
        found[story.name] = sorted(int(f.name.split("_")[-1].split(".")[0]) for f in shots.iterdir())
    return found


def test_import_generate_export_round_trip_gives_the_evaluators_layout(settings, dataset, flux_folder, tmp_path):
    name = imported(settings, dataset, language="ch",
                    spec=ModelSpec(str(flux_folder / "flux"), flux_folder / "stage1"))
    config = GenerateConfig(num_candidates=2, num_inference_steps=2, height=32, width=32, max_sequence_length=32)
    summary = generate_round(settings, name, config, progress=False)
    assert summary.generated == 10
    out = tmp_path / "outputs"
    result = export(settings, out, pick="first")
    ts = out / "storyloop" / "base" / "ch" / "20260102_030405"
    assert result.folder == ts and (result.stories, result.shots, result.picked) == (2, 5, {"first": 5})
    assert tree(out) == [f"storyloop/base/ch/20260102_030405/{f}" for f in [*SHOT_FILES, MANIFEST]]
    assert evaluator_reads(ts) == {"01": [1, 2, 3], "08": [1, 2]}
    manifest = json.loads((ts / MANIFEST).read_text(encoding="utf-8"))
    with session_scope(settings.db_url) as s:
        for row in manifest["shots"]:
            sc = s.scalar(select(Scenario).where(Scenario.key == row["scenario"]))
            first = min(sc.candidates, key=lambda c: c.index)
            assert row["file"] == f"{int(sc.story_id):02d}/shots/shot_{sc.frame_index:02d}.png"
            assert (ts / row["file"]).read_bytes() == asset_path(settings.store_dir, first.asset).read_bytes()
            assert [r.character for r in sc.references] == \
                [c for c in CAST[(sc.story_id, sc.frame_index)] for _ in range(2 if c == "Mia" else 1)]
    assert [s["scenario"] for s in manifest["shots"]] == ["01-01", "01-02", "01-03", "08-01", "08-02"]


def test_winner_is_the_aggregated_choice_and_unjudged_shots_fall_back_to_the_first(settings, dataset, tmp_path):
    name = imported(settings, dataset)
    add_candidates(settings, name)
    with session_scope(settings.db_url) as s:
        users = [add_user(s, u, "password123", Role.annotator).id for u in ("ann", "bob", "cat")]
        rnd = s.scalar(select(Round).where(Round.name == name))
        cands = {sc.key: (sc.id, [c.id for c in sc.candidates]) for sc in rnd.scenarios}
    for u in users:
        judge(settings, *cands["01-01"], u, [A, P], ranks={1: 1})  # candidate 1 wins, 0 fails anatomy
        judge(settings, *cands["08-02"], u, [C, C])  # judged: all bad, no winner
    result = export(settings, tmp_path / "out")
    assert result.picked == {"winner": 1, "first (judged, no clear winner)": 1, "first (not judged)": 3}
    with session_scope(settings.db_url) as s:
        by_key = {sc.key: sc for sc in s.scalars(select(Scenario))}
        winner = by_key["01-01"].candidates[1]
        assert (result.folder / "01/shots/shot_01.png").read_bytes() == \
            asset_path(settings.store_dir, winner.asset).read_bytes()
        first = by_key["08-02"].candidates[0]
        assert (result.folder / "08/shots/shot_02.png").read_bytes() == \
            asset_path(settings.store_dir, first.asset).read_bytes()
    picks = {r["scenario"]: r["picked"] for r in json.loads((result.folder / MANIFEST).read_text())["shots"]}
    assert picks["01-01"] == "winner" and picks["01-02"] == "first (not judged)"


def test_pick_an_index_and_jpeg_candidates_become_png(settings, dataset, tmp_path):
    name = imported(settings, dataset)
    add_candidates(settings, name, fmt="JPEG")
    result = export(settings, tmp_path / "out", pick=parse_pick("1"))
    assert result.picked == {"index 1": 5}
    with session_scope(settings.db_url) as s:
        sc = s.scalar(select(Scenario).where(Scenario.key == "08-01"))
        stored = np.asarray(Image.open(asset_path(settings.store_dir, sc.candidates[1].asset)))
    written = Image.open(result.folder / "08/shots/shot_01.png")
    assert written.format == "PNG" and np.array_equal(np.asarray(written), stored)


def test_default_timestamp_is_now_in_the_evaluators_format(settings, dataset, tmp_path):
    name = imported(settings, dataset)
    add_candidates(settings, name)
    with session_scope(settings.db_url) as s:
        result = export_round(s, settings.store_dir, name, tmp_path / "out", ExportOptions("m", pick="first"))
    assert re.fullmatch(r"\d{8}_\d{6}", result.folder.name) and result.folder.parent.name == "en"


def test_export_refusals_name_the_problem_and_write_nothing(settings, dataset, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RoundError, match="no round named 'nope'"):
        export(settings, out, name="nope")
    name = imported(settings, dataset)
    with pytest.raises(RoundError, match=r"5 scenario\(s\) without candidates \(01-01, 01-02, 01-03, 08-01, "
                                         r"08-02\): run `storyloop generate run --round vb` first"):
        export(settings, out)
    add_candidates(settings, name)
    with pytest.raises(RoundError, match=r"--pick 2: 5 scenario\(s\) have no candidate 2, e.g. 01-01 "
                                         r"\(its candidates: 0, 1\)"):
        export(settings, out, pick=2)
    with pytest.raises(RoundError, match="--timestamp '2026-01-02'"):
        export(settings, out, timestamp="2026-01-02")
    with pytest.raises(RoundError, match="--timestamp '20261340_000000'"):
        export(settings, out, timestamp="20261340_000000")
    with pytest.raises(RoundError, match="--lang 'ch': the round's prompts are in 'en'"):
        export(settings, out, language="ch")
    with pytest.raises(RoundError, match="--mode 'ch': en and ch are languages"):
        export(settings, out, mode="ch")
    with pytest.raises(RoundError, match="--method '../up'"):
        export(settings, out, method="../up")
    with pytest.raises(RoundError, match="--pick 'best'"):
        parse_pick("best")
    assert not out.exists() or tree(out) == []
    src = tmp_path / "src"
    make_image(src / "a.png")
    (src / "s.jsonl").write_text('{"id": "x", "story_id": "01", "frame_index": 1, "prompt": "p", '
                                 '"candidates": ["a.png"]}\n')
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "plain", src / "s.jsonl")
    with pytest.raises(RoundError, match="round 'plain' was not imported from ViStoryBench"):
        export(settings, out, name="plain")


def test_an_existing_timestamp_folder_is_never_overwritten(settings, dataset, tmp_path):
    name = imported(settings, dataset)
    add_candidates(settings, name)
    out = tmp_path / "out"
    first = export(settings, out, pick="first")
    before = {f: (first.folder / f).read_bytes() for f in tree(first.folder)}
    with pytest.raises(RoundError, match="already exists: choose another --timestamp"):
        export(settings, out, pick=1)
    assert {f: (first.folder / f).read_bytes() for f in tree(first.folder)} == before
    assert [p.name for p in first.folder.parent.iterdir()] == ["20260102_030405"]  # no partial folder left
