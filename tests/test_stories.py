"""Story files as frames: the `round create --scenarios` JSONL reader (no model, no database)."""

import json

import pytest

from storyloop.characters import Slot
from storyloop.stories import StoryError, read_story
from tests.conftest import make_image


def test_scenarios_jsonl_frames_keep_slot_order_and_resolve_paths_against_the_file(tmp_path):
    for name in ("mia", "tom", "ball"):
        make_image(tmp_path / "refs" / f"{name}.png")
    rows = [{"id": "x", "story_id": "s", "frame_index": 2, "prompt": "a fox",
             "references": {"Tom": ["refs/tom.png", "refs/ball.png"], "Mia": ["refs/mia.png"]}},
            {"id": "y", "story_id": "s", "frame_index": 0, "prompt": "a cat", "references": ["refs/ball.png"]},
            {"id": "z", "story_id": "t", "frame_index": 0, "prompt": "a cat"}]
    path = tmp_path / "story.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    frames = read_story(path)
    refs = (tmp_path / "refs").resolve()
    assert [(f.story_id, f.frame_index, f.prompt, f.where) for f in frames] == [
        ("s", 2, "a fox", f"{path} line 1"), ("s", 0, "a cat", f"{path} line 2"), ("t", 0, "a cat", f"{path} line 3")]
    assert frames[0].references == [Slot("Tom", refs / "tom.png"), Slot("Tom", refs / "ball.png"),
                                    Slot("Mia", refs / "mia.png")]
    assert frames[1].references == [Slot(None, refs / "ball.png")] and frames[2].references == []


@pytest.mark.parametrize("text, message", [
    ("", "no frames to draw"),
    ("not json\n", "line 1: not valid JSON"),
    ('{"id": "x", "story_id": "s", "frame_index": 0, "prompt": "p", "references": {"Mia": []}}',
     "line 1: field 'references': character 'Mia' has no reference images"),
])
def test_a_bad_story_file_is_refused_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "story.jsonl"
    path.write_text(text)
    with pytest.raises(StoryError, match=str(path)) as err:
        read_story(path)
    assert message in str(err.value)


@pytest.mark.parametrize("language", ["en", "ch"])
@pytest.mark.parametrize("given", ["story.json", "folder"])
def test_a_vistorybench_story_is_read_shot_by_shot_with_each_characters_images(tmp_path, language, given):
    from tests.vistory.helpers import CAST, IMAGES, PROMPTS, build_dataset

    story = build_dataset(tmp_path) / "ViStory" / "01"
    frames = read_story(story / "story.json" if given == "story.json" else story, language=language)
    assert [(f.story_id, f.frame_index) for f in frames] == [("01", 1), ("01", 2), ("01", 3)]
    assert [f.prompt for f in frames] == [PROMPTS[language][("01", i)] for i in (1, 2, 3)]
    for f in frames:  # the English names (the image folders), in the shot's order, each with all its images
        names = [s.character for s in f.references]
        assert names == [n for n in CAST[("01", f.frame_index)] for _ in range(IMAGES[("01", n)])]
        assert all(s.item.parent.name == s.character and s.item.is_file() for s in f.references)
    assert frames[0].where.endswith("story.json shot 1")


def test_a_broken_vistorybench_story_is_refused_naming_story_and_shot(tmp_path):
    from tests.vistory.helpers import build_dataset, story_json, write_story

    root = build_dataset(tmp_path) / "ViStory"
    data = story_json("01")
    data["Shots"][0]["Characters Appearing"]["en"] = ["Nobody"]
    write_story(root, "01", data)
    with pytest.raises(StoryError, match="story 01") as err:
        read_story(root / "01" / "story.json")
    assert "Nobody" in str(err.value)
