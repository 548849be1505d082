"""study create: arms, scenarios from a round or a file, folder images matched by name, all or nothing."""

import pytest
from PIL import Image
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.assets import asset_path
from storyloop.db.models import (ArmKind, Asset, Round, Scenario, Study, StudyArm, StudyImage, StudyItem,
                                 StudyKind)
from storyloop.db.rounds import RoundError
from storyloop.studies.arms import parse_arm, parse_arms
from storyloop.studies.create import StudyOptions, create_study
from storyloop.studies.errors import StudyError
from storyloop.studies.images import png_chunk_types
from tests.conftest import make_image
from tests.studies.conftest import SCENARIOS, folder_arm, make_round, scenarios_file

KEYS = [k for k, *_ in SCENARIOS]


def counts(url):
    with session_scope(url) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                for m in (Round, Scenario, Study, StudyArm, StudyImage, StudyItem, Asset)}


def store_files(settings):
    return sorted(p.name for p in settings.store_dir.rglob("*") if p.is_file()) if settings.store_dir.exists() else []


def test_model_spec_syntax(models, tmp_path):
    arm = parse_arm(f"dpo=base={models / 'flux'},stage1={models / 'stage1'},ref_scale=2")
    assert (arm.name, arm.kind, arm.reference_guidance_scale) == ("dpo", ArmKind.model, 2.0)
    cols = arm.columns()
    assert cols["base_model"] == str((models / "flux").resolve()) and len(cols["stage1_lora_sha256"]) == 64
    assert cols["dpo_lora_path"] is None
    yaml = tmp_path / "arm.yaml"
    yaml.write_text(f"base: {models / 'flux'}\nstage1: {models / 'stage1'}\n")
    assert parse_arm(f"s1={yaml}").columns() == {**parse_arm(f"s1=base={models / 'flux'},stage1={models / 'stage1'}")
                                                 .columns()}
    folder = folder_arm(tmp_path / "uno", KEYS)
    assert parse_arm(f"uno={folder}").kind is ArmKind.folder
    assert parse_arm(f"uno=folder={folder}").folder == folder


@pytest.mark.parametrize("text, message", [
    ("noequals", "expected NAME=SPEC"), ("bad name=x", "an arm name"), ("a=base=/nowhere/flux", "no such folder"),
    ("a=/nowhere/dir", "is not a folder"), ("a=base=x/y,color=red", "unknown key"), ("a=stage1=/x", "needs base="),
    ("a=base=x/y,ref_scale=-1", "ref_scale must be >= 0"), ("a=base=x/y,dpo=/x", "give stage1= too")])
def test_bad_arm_specs_are_one_clear_error(text, message):
    with pytest.raises(StudyError, match=message):
        parse_arm(text)


def test_two_arms_with_one_name_are_refused(tmp_path, models):
    folder = folder_arm(tmp_path / "uno", KEYS)
    with pytest.raises(StudyError, match="two arms are named 'x'"):
        parse_arms([f"x={folder}", f"x=base={models / 'flux'}"])


def test_create_pairwise_from_a_round(settings, tmp_path, models):
    make_round(settings, tmp_path / "src")
    uno = folder_arm(tmp_path / "uno", KEYS)
    arms = parse_arms([f"stage1=base={models / 'flux'},stage1={models / 'stage1'}", f"plain=base={models / 'flux'}",
                       f"uno={uno}"])
    with session_scope(settings.db_url) as s:
        summary = create_study(s, settings.store_dir, "st1", arms, round_name="r1")
    assert (summary.items, summary.folder_images, summary.scenarios) == (4 * 3, 4, 4)
    with session_scope(settings.db_url) as s:
        study = s.scalar(select(Study))
        assert [(a.name, a.kind) for a in study.arms] == [("stage1", ArmKind.model), ("plain", ArmKind.model),
                                                          ("uno", ArmKind.folder)]
        items = list(s.scalars(select(StudyItem).order_by(StudyItem.id)))
        assert sorted(i.position for i in items) == list(range(12))
        assert [i.position for i in items] != list(range(12))  # shuffled
        assert {(i.scenario.key, i.arm_a.name, i.arm_b.name) for i in items} == {
            (k, a, b) for k in KEYS for a, b in [("stage1", "plain"), ("stage1", "uno"), ("plain", "uno")]}
        images = list(s.scalars(select(StudyImage)))
        assert sorted((im.scenario_id, im.seed_index) for im in images) == sorted(
            (sc.id, 0) for sc in s.scalars(select(Scenario)))
        for im in images:  # re-encoded: pixels kept, the maker's name gone
            data = asset_path(settings.store_dir, im.asset).read_bytes()
            assert b"uno" not in data and png_chunk_types(data) == ["IHDR", "IDAT", "IEND"]
            src = Image.open(uno / im.params["file"])
            assert Image.open(asset_path(settings.store_dir, im.asset)).tobytes() == src.convert("RGB").tobytes()


def test_create_likert_from_a_scenarios_file_with_seeds(settings, tmp_path, models):
    uno = folder_arm(tmp_path / "uno", KEYS, seeds=2)
    arms = parse_arms([f"dpo=base={models / 'flux'},stage1={models / 'stage1'}", f"uno={uno}"])
    with session_scope(settings.db_url) as s:
        summary = create_study(s, settings.store_dir, "lk", arms, scenarios_file=scenarios_file(tmp_path / "src"),
                               options=StudyOptions(kind=StudyKind.likert, seeds=2, answers_per_item=2))
    assert (summary.round, summary.items, summary.folder_images, summary.round_created) == ("study-lk", 2 * 2 * 2, 8,
                                                                                           True)
    with session_scope(settings.db_url) as s:
        items = list(s.scalars(select(StudyItem)))
        assert {(i.story_id, i.seed_index, i.arm_a.name) for i in items} == {
            (st, seed, a) for st in "AB" for seed in (0, 1) for a in ("dpo", "uno")}
        assert all(i.scenario_id is None and i.arm_b_id is None for i in items)
        assert s.scalar(select(func.count()).select_from(Scenario)) == 4


def _refused(settings, match, **kw):
    before, files = counts(settings.db_url), store_files(settings)
    with pytest.raises(RoundError, match=match):  # a StudyError, or the scenarios file's ImportValidationError
        with session_scope(settings.db_url) as s:
            create_study(s, settings.store_dir, kw.pop("name", "bad"), **kw)
    assert counts(settings.db_url) == before and store_files(settings) == files


def test_folder_arm_missing_a_scenario_image_writes_nothing(settings, tmp_path, models):
    uno = folder_arm(tmp_path / "uno", KEYS[:3])
    arms = parse_arms([f"plain=base={models / 'flux'}", f"uno={uno}"])
    _refused(settings, r"arm 'uno' (?s:.*)1 problem(?s:.*)no image for scenario 'b1' \(expected b1.png or b1_0.png\)",
             arms=arms, scenarios_file=scenarios_file(tmp_path / "src"))


def test_unreadable_or_ambiguous_folder_images_are_listed(settings, tmp_path, models):
    make_round(settings, tmp_path / "src")
    uno = folder_arm(tmp_path / "uno", KEYS)
    (uno / "a0.png").write_bytes(b"not a png")
    make_image(uno / "a1_0.jpg", size=(8, 8))
    arms = parse_arms([f"plain=base={models / 'flux'}", f"uno={uno}"])
    _refused(settings, r"2 problem\(s\)(?s:.*)a0.png: not a readable image(?s:.*)2 images for scenario 'a1'",
             arms=arms, round_name="r1")


def test_a_round_with_no_scenarios_is_refused(settings, tmp_path, models):
    with session_scope(settings.db_url) as s:
        s.add(Round(name="empty"))
    arms = parse_arms([f"a=base={models / 'flux'}", f"b=base={models / 'flux'},stage1={models / 'stage1'}"])
    _refused(settings, "round 'empty' has no scenarios", arms=arms, round_name="empty")


def test_other_bad_input_writes_nothing(settings, tmp_path, models):
    make_round(settings, tmp_path / "src")
    one = parse_arms([f"a=base={models / 'flux'}"])
    _refused(settings, "needs at least 2 arm", arms=one, round_name="r1")
    two = parse_arms([f"a=base={models / 'flux'}", f"b=base={models / 'flux'},stage1={models / 'stage1'}"])
    _refused(settings, "no round named 'nope'", arms=two, round_name="nope")
    _refused(settings, "either --round R or --scenarios FILE", arms=two)
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text('{"id": "x"}\n')
    _refused(settings, "nothing was imported", arms=two, scenarios_file=bad_file)
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, "dup", two, round_name="r1")
    _refused(settings, "a study named 'dup' already exists", name="dup", arms=two, round_name="r1")


def test_a_yaml_arm_that_is_not_a_mapping_is_one_clear_error(tmp_path):
    bad = tmp_path / "arm.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(StudyError, match="arm 'a': .*arm.yaml is not valid YAML"):
        parse_arm(f"a={bad}")
    bad.write_text("- just a list\n")
    with pytest.raises(StudyError, match="must hold a mapping"):
        parse_arm(f"a={bad}")
