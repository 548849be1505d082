"""`vistory import`: a split becomes a round (one scenario per shot, references per character), all or nothing."""

import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.models import Asset, Round, Scenario, ScenarioReference
from storyloop.db.rounds import ImportValidationError, RoundError, create_round
from storyloop.vistory.dataset import DatasetError
from storyloop.vistory.importing import ImportOptions, import_dataset
from tests.conftest import make_image
from tests.vistory.helpers import CAST, PROMPTS, build_dataset, story_json, write_story


@pytest.fixture
def dataset(tmp_path):
    return build_dataset(tmp_path / "data")


def run_import(settings, dataset, name="vb", **options):
    with session_scope(settings.db_url) as s:
        return import_dataset(s, settings.store_dir, dataset, name, ImportOptions(**options))


def counts(url):
    with session_scope(url) as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Round, Scenario, ScenarioReference, Asset))


def scenarios(url, name="vb"):
    with session_scope(url) as s:
        rnd = s.scalar(select(Round).where(Round.name == name))
        return rnd.source, [(sc.key, sc.story_id, sc.frame_index, sc.prompt,
                             [(r.character, r.position, r.asset.format) for r in sc.references])
                            for sc in rnd.scenarios]


@pytest.mark.parametrize("language", ["en", "ch"])
def test_import_makes_one_scenario_per_shot_with_named_references(settings, dataset, language):
    out = run_import(settings, dataset, split="lite", language=language)
    assert (out.stories, out.split_size, out.frames, out.rounds.scenarios_added) == (["01", "08"], 2, 5, 5)
    source, rows = scenarios(settings.db_url)
    assert [(k, sid, i) for k, sid, i, *_ in rows] == [("01-01", "01", 1), ("01-02", "01", 2), ("01-03", "01", 3),
                                                       ("08-01", "08", 1), ("08-02", "08", 2)]
    for _, sid, i, prompt, refs in rows:
        assert prompt == PROMPTS[language][(sid, i)]
        expected = [c for c in CAST[(sid, i)] for _ in range(2 if c == "Mia" else 1)]  # Mia has two images
        assert [c for c, *_ in refs] == expected
        assert [pos for _, pos, _ in refs] == list(range(len(expected)))
    assert {"benchmark": "vistorybench", "split": "lite", "language": language, "refs_per_character": None,
            "prompt_template": "vistorybench-baseline"}.items() <= source.items()
    assert source["evaluator"] == "ViStoryBench/vistorybench@514cc31"
    assert counts(settings.db_url)[3] == 4  # Mia's two images, Tom's, Old Fox's: each stored once


def test_reimport_is_a_no_op_and_more_stories_extend_the_round(settings, dataset):
    run_import(settings, dataset, stories=("08",))
    again = run_import(settings, dataset, stories=("08",))
    assert (again.rounds.round_created, again.rounds.scenarios_added, again.rounds.scenarios_unchanged) == \
        (False, 0, 2)
    more = run_import(settings, dataset)
    assert (more.rounds.scenarios_added, more.rounds.scenarios_unchanged) == (3, 2)
    assert counts(settings.db_url)[:2] == (1, 5)


def test_a_round_imported_otherwise_is_not_extended(settings, dataset, tmp_path):
    run_import(settings, dataset, language="en")
    with pytest.raises(RoundError, match=r"round 'vb' was imported with language 'en'"):
        run_import(settings, dataset, language="ch")
    with pytest.raises(RoundError, match=r"refs_per_character None"):
        run_import(settings, dataset, refs_per_character=1)
    src = tmp_path / "src"
    make_image(src / "a.png")
    (src / "s.jsonl").write_text('{"id": "x", "story_id": "s", "frame_index": 0, "prompt": "p", '
                                 '"candidates": ["a.png"]}\n')
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "plain", src / "s.jsonl")
    with pytest.raises(RoundError, match="round 'plain' already exists and was not imported from ViStoryBench"):
        run_import(settings, dataset, name="plain")


def test_refs_per_character_caps_each_character(settings, dataset):
    run_import(settings, dataset, refs_per_character=1, stories=("01",))
    _, rows = scenarios(settings.db_url)
    assert [c for c, *_ in rows[0][4]] == ["Mia", "Tom"]


def _breaks(root):
    """Each way the issue names a dataset can be wrong, one per story, with what the error must say."""
    bad_index = story_json("01")
    bad_index["Shots"][1]["index"] = -2
    unknown = story_json("08")
    unknown["Shots"][1]["Characters Appearing"] = {"en": ["Nobody"], "ch": ["无名"]}
    return {
        "missing image folder": (lambda: (root / "08" / "image" / "Old Fox" / "00.jpg").unlink() or
                                 (root / "08" / "image" / "Old Fox").rmdir(),
                                 "story 08 shot 1: character 'Old Fox': image folder"),
        "unknown character": (lambda: write_story(root, "08", unknown),
                              "story 08 shot 2: 'Characters Appearing' names 'Nobody', who is not in Characters"),
        "bad index": (lambda: write_story(root, "01", bad_index),
                      "story 01 shot #2 (its place in Shots): field 'index': expected a whole number from 1, got -2"),
        "bad JSON": (lambda: write_story(root, "01", '{"Shots": [}'), "story 01: story.json: not valid JSON"),
        "unreadable image": (lambda: (root / "01" / "image" / "Mia" / "01.jpg").write_bytes(b"\xff\xd8 not a jpeg"),
                             "story 01 shot 1: references['Mia'][1]"),
    }


@pytest.mark.parametrize("case", ["missing image folder", "unknown character", "bad index", "bad JSON",
                                  "unreadable image"])
def test_each_dataset_problem_is_reported_and_nothing_is_written(settings, dataset, case):
    breaker, expected = _breaks(dataset / "ViStory")[case]
    breaker()
    with pytest.raises(ImportValidationError) as err:
        run_import(settings, dataset)
    assert expected in str(err.value) and "nothing was imported" in str(err.value)
    assert counts(settings.db_url) == (0, 0, 0, 0)
    assert not settings.store_dir.exists() or not any(p.is_file() for p in settings.store_dir.rglob("*"))


def test_all_problems_of_all_stories_are_reported_together(settings, dataset):
    root = dataset / "ViStory"
    breaks = _breaks(root)
    for case in ("missing image folder", "bad index"):
        breaks[case][0]()
    with pytest.raises(DatasetError) as err:
        run_import(settings, dataset)
    assert len(err.value.problems) == 2
    assert counts(settings.db_url) == (0, 0, 0, 0)
