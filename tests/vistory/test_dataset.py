"""Reading ViStoryBench's story folders into frames: prompts to the byte, references per character, every
problem named with its story and shot."""

import json

import pytest

from storyloop.vistory.dataset import (LITE_STORIES, DatasetError, read_dataset, shot_prompt, story_frames,
                                       story_ids)
from tests.vistory.helpers import CAST, PROMPTS, SHOTS, build_dataset, story_json, write_story


@pytest.fixture
def dataset(tmp_path):
    return build_dataset(tmp_path / "data")


@pytest.mark.parametrize("language", ["en", "ch"])
def test_story_frames_build_the_baselines_prompt_and_per_character_references(dataset, language):
    root = dataset / "ViStory"
    frames = story_frames(root / "01", language) + story_frames(root / "08", language)
    assert [(f.story_id, f.frame_index) for f in frames] == [("01", 1), ("01", 2), ("01", 3), ("08", 1), ("08", 2)]
    for f in frames:
        assert f.prompt == PROMPTS[language][(f.story_id, f.frame_index)]
        assert list(f.references) == CAST[(f.story_id, f.frame_index)]  # English names, in the shot's order
    mia = frames[0].references["Mia"]
    assert [p.relative_to(root).as_posix() for p in mia] == ["01/image/Mia/00.jpg", "01/image/Mia/01.jpg"]


def test_refs_per_character_keeps_the_first_images_by_name(dataset):
    frames = story_frames(dataset / "ViStory" / "01", "en", refs_per_character=1)
    assert [p.name for p in frames[0].references["Mia"]] == ["00.jpg"]
    assert [p.name for p in frames[0].references["Tom"]] == ["00.jpg"]


def test_shot_prompt_is_camera_plot_script_cast_scene():
    assert shot_prompt("c", "p", "s", [("A", "x"), ("B", "y")], "e") == "c;p;s;A is x;B is y;e;"
    assert shot_prompt("c", "p", "s", [], "e") == "c;p;s;;e;"


def test_only_numeric_folders_are_stories_and_lite_is_the_fixed_twenty(dataset):
    root = dataset / "ViStory"
    (root / "02").mkdir()
    assert story_ids(root, "full") == ["01", "02", "08"]
    assert story_ids(root, "lite") == ["01", "08"]
    assert len(LITE_STORIES) == 20 and "02" not in LITE_STORIES


def test_read_dataset_accepts_the_parent_or_vistory_itself_and_selects_stories(dataset):
    a = read_dataset(dataset, "lite", "en")
    b = read_dataset(dataset / "ViStory", "full", "en", stories=["08"])
    assert (a.stories, a.split_size, len(a.frames)) == (["01", "08"], 2, 5)
    assert (b.stories, [f.frame_index for f in b.frames]) == (["08"], [1, 2])


def _problems(exc: DatasetError) -> str:
    return "\n".join(exc.problems)


def test_stories_outside_the_split_or_the_dataset_are_refused(dataset):
    with pytest.raises(DatasetError, match=r"story 02: not in .*\(not a Lite story\)"):
        read_dataset(dataset, "lite", "en", stories=["01", "02"])
    with pytest.raises(DatasetError, match="story 99: not in"):
        read_dataset(dataset, "full", "en", stories=["99"])
    with pytest.raises(DatasetError, match="split 'half'"):
        read_dataset(dataset, "half", "en")
    with pytest.raises(DatasetError, match="language 'fr'"):
        read_dataset(dataset, "full", "fr")
    with pytest.raises(DatasetError, match="no such folder"):
        read_dataset(dataset / "nowhere", "full", "en")


def test_every_problem_is_named_with_its_story_and_shot(dataset):
    root = dataset / "ViStory"
    one = story_json("01")
    one["Shots"][0]["Characters Appearing"]["en"] = ["Mia", "Zed"]       # unknown character
    one["Shots"][1]["index"] = "two"                                      # bad index
    one["Shots"][2]["index"] = 1                                          # repeated index
    write_story(root, "01", one)
    write_story(root, "08", '{"Characters": {,}')                         # bad JSON
    with pytest.raises(DatasetError) as err:
        read_dataset(dataset, "full", "en")
    problems = _problems(err.value)
    assert "story 01 shot 1: 'Characters Appearing' names 'Zed', who is not in Characters (known: 'Mia', 'Tom')" \
        in problems
    assert "story 01 shot #2 (its place in Shots): field 'index': expected a whole number from 1, got 'two'" \
        in problems
    assert "story 01 shot 1: index 1 repeats (first at #1 in Shots)" in problems
    assert "story 08: story.json: not valid JSON (Expecting property name enclosed in double quotes at line 1 " \
           "column 17)" in problems
    assert str(err.value).startswith(f"{root}: 4 problem(s), nothing was imported")


def test_a_missing_or_empty_image_folder_is_named_with_the_first_shot_of_its_character(dataset):
    root = dataset / "ViStory"
    for p in (root / "01" / "image" / "Tom").iterdir():
        p.unlink()
    (root / "01" / "image" / "Tom").rmdir()
    (root / "08" / "image" / "Old Fox" / "00.jpg").rename(root / "08" / "image" / "Old Fox" / "notes.txt")
    with pytest.raises(DatasetError) as err:
        read_dataset(dataset, "full", "en")
    assert _problems(err.value).splitlines() == [
        f"story 01 shot 1: character 'Tom': image folder {root / '01' / 'image' / 'Tom'} is missing",
        (f"story 08 shot 1: character 'Old Fox': image folder {root / '08' / 'image' / 'Old Fox'} has no "
         ".png/.jpg images")]


def test_shape_problems_of_shots_and_characters_are_reported(dataset):
    root = dataset / "ViStory"
    one = story_json("01")
    del one["Shots"][0]["Setting Description"]["ch"]
    one["Shots"][2]["Characters Appearing"]["ch"] = ["米娅", "汤姆"]
    one["Shots"][1]["index"] = 0
    one["Characters"]["Tom"] = {"name_en": "Tom"}
    write_story(root, "01", one)
    with pytest.raises(DatasetError) as err:
        story_frames(root / "01", "ch")
    problems = _problems(err.value)
    for expected in ("story 01: character 'Tom': field 'prompt_ch' is missing or not text",
                     "story 01 shot 1: field 'Setting Description': expected an object with 'ch' text",
                     "story 01 shot #2 (its place in Shots): field 'index': expected a whole number from 1, got 0",
                     "story 01 shot 3: field 'Characters Appearing': 'en' names 1 character(s), 'ch' names 2"):
        assert expected in problems
    write_story(root, "08", {"Characters": [], "Shots": []})
    with pytest.raises(DatasetError) as err:
        story_frames(root / "08", "en")
    assert _problems(err.value).splitlines() == [
        "story 08: field 'Characters': expected an object keyed by English name",
        "story 08: field 'Shots': expected a non-empty list of shots"]
    (root / "08" / "story.json").unlink()
    with pytest.raises(DatasetError, match=r"story 08: no story.json in"):
        story_frames(root / "08", "en")


def test_character_names_cannot_leave_the_image_folder(dataset):
    root = dataset / "ViStory"
    one = story_json("01")
    one["Characters"]["../Tom"] = one["Characters"].pop("Tom")
    one["Shots"][0]["Characters Appearing"]["en"] = ["Mia", "../Tom"]
    write_story(root, "01", one)
    with pytest.raises(DatasetError, match=r"story 01: character '\.\./Tom': not a usable folder name"):
        story_frames(root / "01", "en")


def test_the_shots_are_what_the_helpers_wrote():  # guards the fixture the other tests rely on
    assert {sid: [s["index"] for s in shots] for sid, shots in SHOTS.items()} == {"01": [1, 2, 3], "08": [1, 2]}
    assert json.loads(json.dumps(story_json("01"), ensure_ascii=False))["Characters"]["Mia"]["name_ch"] == "米娅"
