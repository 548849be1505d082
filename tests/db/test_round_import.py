import hashlib
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.models import Asset, Candidate, Round, Scenario, ScenarioReference
from storyloop.db.rounds import ImportValidationError, ModelSpec, RoundError, create_round
from tests.conftest import make_image, png_claiming_size


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def story(tmp_path):
    """Two frames of one story: shared reference, two candidates each (one candidate image reused)."""
    src = tmp_path / "src"
    make_image(src / "ref.png", (10, 10, 200))
    make_image(src / "a.png", (200, 10, 10))
    make_image(src / "b.png", (10, 200, 10))
    make_image(src / "c.jpg", (90, 90, 90), fmt="JPEG")
    rows = [
        {"id": "s1-f1", "story_id": "s1", "frame_index": 1, "prompt": "the fox reads a book",
         "references": ["ref.png"], "candidates": ["a.png", "b.png"]},
        {"id": "s1-f2", "story_id": "s1", "frame_index": 2, "prompt": "the fox sleeps",
         "references": ["ref.png"], "candidates": ["c.jpg", "a.png"]},
    ]
    return write_jsonl(src / "scenarios.jsonl", rows), rows


def counts(url):
    with session_scope(url) as s:
        return tuple(s.scalar(select(func.count()).select_from(m))
                     for m in (Round, Scenario, ScenarioReference, Candidate, Asset))


def test_import_creates_round_scenarios_and_deduplicated_assets(settings, story):
    path, _ = story
    with session_scope(settings.db_url) as s:
        summary = create_round(s, settings.store_dir, "r1", path)
    assert (summary.scenarios_added, summary.references, summary.candidates, summary.new_assets) == (2, 2, 4, 4)
    assert counts(settings.db_url) == (1, 2, 2, 4, 4)
    stored = sorted(p.name for p in settings.store_dir.rglob("*") if p.is_file())
    assert len(stored) == 4 and any(n.endswith(".jpg") for n in stored)
    with session_scope(settings.db_url) as s:
        sc = s.scalar(select(Scenario).where(Scenario.key == "s1-f2"))
        assert [c.asset.format for c in sc.candidates] == ["JPEG", "PNG"]
        assert (sc.references[0].asset.width, sc.references[0].asset.height) == (32, 24)


def test_reimporting_the_same_file_changes_nothing(settings, story):
    path, _ = story
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", path)
    before = counts(settings.db_url)
    with session_scope(settings.db_url) as s:
        summary = create_round(s, settings.store_dir, "r1", path)
    assert (summary.round_created, summary.scenarios_added, summary.scenarios_unchanged) == (False, 0, 2)
    assert counts(settings.db_url) == before


def test_same_image_in_two_rounds_is_stored_once(settings, story):
    path, _ = story
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", path)
        summary = create_round(s, settings.store_dir, "r2", path, parent="r1")
    assert summary.new_assets == 0
    assert counts(settings.db_url)[4] == 4
    assert len([p for p in settings.store_dir.rglob("*") if p.is_file()]) == 4


def test_every_problem_is_reported_with_its_line_and_nothing_is_written(settings, story, tmp_path):
    path, rows = story
    (tmp_path / "src" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "src" / "bomb.png").write_bytes(png_claiming_size(40_000, 40_000))
    (tmp_path / "src" / "empty.png").write_bytes(b"")
    bad = write_jsonl(path.parent / "bad.jsonl", [
        rows[0],
        "{not json",
        {**rows[1], "id": "s1-f1"},                                       # duplicate id
        {"id": "x", "story_id": "s2", "frame_index": -1, "prompt": "p"},  # bad field
        {"id": "y", "story_id": "s2", "frame_index": 0, "prompt": "p", "references": ["missing.png"]},
        {"id": "z", "story_id": "s2", "frame_index": 1, "prompt": "p", "candidates": ["broken.png"]},
        {"id": "w", "story_id": "s2", "frame_index": 2, "prompt": "p", "colour": "red"},
        {"id": "v", "story_id": "s2", "frame_index": 3, "prompt": "p", "candidates": ["a.png", "a.png"]},
        {"id": "u", "story_id": "s2", "frame_index": 4, "prompt": "p", "candidates": ["bomb.png", "empty.png"]},
    ])
    with pytest.raises(ImportValidationError) as err, session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", bad)
    message = str(err.value)
    for expected in ("line 2: not valid JSON", "line 3: duplicate id 's1-f1' (first on line 1)",
                     "line 4: field 'frame_index'", "line 5: references[0] 'missing.png': no such file",
                     "line 6: candidates[0] 'broken.png': not a readable image", "line 7: field 'colour'",
                     "line 8: candidates[1] is the same image as candidates[0]",
                     "line 9: candidates[0] 'bomb.png': decompression bomb refused",
                     "line 9: candidates[1] 'empty.png': empty file"):
        assert expected in message
    assert counts(settings.db_url) == (0, 0, 0, 0, 0)
    assert not settings.store_dir.exists() or not any(settings.store_dir.rglob("*.png"))


def test_changed_scenario_under_an_existing_id_is_refused(settings, story):
    path, rows = story
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", path)
    changed = write_jsonl(path.parent / "changed.jsonl", [{**rows[0], "prompt": "the fox dances"}])
    with pytest.raises(ImportValidationError, match="line 1: scenario 's1-f1' already exists"), \
            session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", changed)


def test_unknown_parent_is_refused(settings, story):
    path, _ = story
    with pytest.raises(RoundError, match="parent round 'nope'"), session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", path, parent="nope")
    assert counts(settings.db_url)[0] == 0


def test_round_records_model_spec_with_lora_hashes(settings, tmp_path):
    lora = tmp_path / "stage1.safetensors"
    lora.write_bytes(b"weights")
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", spec=ModelSpec("black-forest-labs/FLUX.1-dev", lora))
    with session_scope(settings.db_url) as s:
        r = s.scalar(select(Round))
        assert r.base_model == "black-forest-labs/FLUX.1-dev"
        assert r.stage1_lora_sha256 == hashlib.sha256(b"weights").hexdigest()
        assert r.dpo_lora_sha256 is None


# -- several characters per frame -------------------------------------------------------------------------

@pytest.fixture
def two_characters(tmp_path):
    src = tmp_path / "src"
    for name, colour in (("mia-1", (200, 0, 0)), ("tom-1", (0, 0, 200)), ("tom-2", (0, 0, 120)),
                         ("flat", (0, 200, 0))):
        make_image(src / "refs" / f"{name}.png", colour)
    rows = [
        {"id": "s1-f1", "story_id": "s1", "frame_index": 1, "prompt": "Mia and Tom at the fair",
         "references": {"Mia": ["refs/mia-1.png"], "Tom": ["refs/tom-1.png", "refs/tom-2.png"]}},
        {"id": "s1-f2", "story_id": "s1", "frame_index": 2, "prompt": "a flat list stays valid",
         "references": ["refs/flat.png"]},
    ]
    return write_jsonl(src / "scenarios.jsonl", rows)


def test_references_by_character_keep_their_characters_in_the_order_written(settings, two_characters):
    with session_scope(settings.db_url) as s:
        summary = create_round(s, settings.store_dir, "r1", two_characters)
    assert summary.references == 4
    with session_scope(settings.db_url) as s:
        two = s.scalar(select(Scenario).where(Scenario.key == "s1-f1"))
        assert [(r.position, r.character) for r in two.references] == [(0, "Mia"), (1, "Tom"), (2, "Tom")]
        sha = hashlib.sha256((two_characters.parent / "refs" / "tom-2.png").read_bytes()).hexdigest()
        assert two.references[2].asset.sha256 == sha
        flat = s.scalar(select(Scenario).where(Scenario.key == "s1-f2"))
        assert [(r.position, r.character) for r in flat.references] == [(0, None)]


def test_reimport_is_a_no_op_but_the_same_images_under_other_characters_conflict(settings, two_characters):
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", two_characters)
    with session_scope(settings.db_url) as s:
        assert create_round(s, settings.store_dir, "r1", two_characters).scenarios_unchanged == 2
    rows = [json.loads(line) for line in two_characters.read_text().splitlines()]
    rows[0]["references"] = {"Ann": ["refs/mia-1.png"], "Tom": ["refs/tom-1.png", "refs/tom-2.png"]}
    other = write_jsonl(two_characters.parent / "renamed.jsonl", rows)
    with pytest.raises(ImportValidationError, match="s1-f1.*different content"), \
            session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", other)


@pytest.mark.parametrize("references, message", [
    ({"Mia": []}, "character 'Mia' has no reference images"),
    ({" ": ["refs/mia-1.png"]}, "character name must be a non-empty string"),
    ({"Mia": ["refs/missing.png"]}, "references['Mia'][0] 'refs/missing.png'"),
    ({"Mia": ["refs/mia-1.png"], "Tom": ["refs/tom-1.png", "refs/nope.png"]}, "references['Tom'][1]"),
    ({"Mia": "refs/mia-1.png"}, "field 'references"),
])
def test_bad_character_references_name_line_and_character_and_write_nothing(settings, two_characters, references,
                                                                           message):
    rows = [json.loads(line) for line in two_characters.read_text().splitlines()]
    rows[0]["references"] = references
    bad = write_jsonl(two_characters.parent / "bad.jsonl", rows)
    with pytest.raises(ImportValidationError, match=re.escape(message)) as err, \
            session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", bad)
    assert "line 1" in str(err.value)
    assert counts(settings.db_url) == (0, 0, 0, 0, 0)
