"""A small ViStoryBench-format dataset and evaluator summaries, built in code (nothing is downloaded).

Two stories (01 and 08, both Lite stories), three characters that appear (Mia and Tom in 01, Old Fox in 08)
and one that never does (Ghost, with no image folder), a shot with two characters, shots with none, and `ch`
text with non-ASCII names. Story 01's story.json starts with a UTF-8 BOM, as some distributed files do.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from PIL import Image

CHARACTERS = {
    "01": {
        "Mia": {"name_en": "Mia", "name_ch": "米娅", "prompt_en": "a girl with a red scarf",
                "prompt_ch": "一个戴红围巾的女孩", "tag": "realistic_human", "num_of_appearances": 2},
        "Tom": {"name_en": "Tom", "name_ch": "汤姆", "prompt_en": "a boy in a blue coat",
                "prompt_ch": "穿蓝外套的男孩", "tag": "realistic_human", "num_of_appearances": 1},
    },
    "08": {
        "Old Fox": {"name_en": "Old Fox", "name_ch": "老狐狸", "prompt_en": "a grey fox with spectacles",
                    "prompt_ch": "戴眼镜的灰狐狸", "tag": "non_human", "num_of_appearances": 1},
        "Ghost": {"name_en": "Ghost", "name_ch": "幽灵", "prompt_en": "a pale ghost", "prompt_ch": "苍白的幽灵",
                  "tag": "non_human", "num_of_appearances": 0},
    },
}
IMAGES = {("01", "Mia"): 2, ("01", "Tom"): 1, ("08", "Old Fox"): 1}  # Ghost has no folder: it never appears


def pair(en: str, ch: str) -> dict:
    return {"en": en, "ch": ch}


def shot(index, camera, plot, script, scene, cast_en, cast_ch) -> dict:
    return {"index": index, "Setting Description": pair(*scene), "Plot Correspondence": pair(*plot),
            "Characters Appearing": {"en": cast_en, "ch": cast_ch}, "Static Shot Description": pair(*script),
            "Shot Perspective Design": pair(*camera)}


SHOTS = {
    "01": [
        shot(1, ("close-up", "特写"), ("Mia meets Tom", "米娅遇见汤姆"), ("Mia waves at Tom", "米娅向汤姆挥手"),
             ("a park in autumn", "秋天的公园"), ["Mia", "Tom"], ["米娅", "汤姆"]),
        shot(2, ("wide shot", "远景"), ("the park empties", "公园空了"), ("leaves fall", "落叶飘落"),
             ("the park at dusk", "黄昏的公园"), [], []),
        shot(3, ("medium shot", "中景"), ("Mia walks home", "米娅走回家"), ("Mia holds a leaf", "米娅拿着一片叶子"),
             ("a quiet street", "安静的街道"), ["Mia"], ["米娅"]),
    ],
    "08": [
        shot(1, ("low angle", "仰拍"), ("the fox reads", "狐狸读书"), ("Old Fox turns a page", "老狐狸翻了一页"),
             ("a library", "图书馆"), ["Old Fox"], ["老狐狸"]),
        shot(2, ("top view", "俯拍"), ("night falls", "夜幕降临"), ("a candle burns", "一支蜡烛在燃烧"),
             ("the library at night", "夜晚的图书馆"), [], []),
    ],
}

# What import must build from the above, by language: (story, shot) -> prompt.
PROMPTS = {
    "en": {("01", 1): "close-up;Mia meets Tom;Mia waves at Tom;Mia is a girl with a red scarf;"
                      "Tom is a boy in a blue coat;a park in autumn;",
           ("01", 2): "wide shot;the park empties;leaves fall;;the park at dusk;",
           ("01", 3): "medium shot;Mia walks home;Mia holds a leaf;Mia is a girl with a red scarf;a quiet street;",
           ("08", 1): "low angle;the fox reads;Old Fox turns a page;Old Fox is a grey fox with spectacles;a library;",
           ("08", 2): "top view;night falls;a candle burns;;the library at night;"},
    "ch": {("01", 1): "特写;米娅遇见汤姆;米娅向汤姆挥手;米娅 is 一个戴红围巾的女孩;汤姆 is 穿蓝外套的男孩;秋天的公园;",
           ("01", 2): "远景;公园空了;落叶飘落;;黄昏的公园;",
           ("01", 3): "中景;米娅走回家;米娅拿着一片叶子;米娅 is 一个戴红围巾的女孩;安静的街道;",
           ("08", 1): "仰拍;狐狸读书;老狐狸翻了一页;老狐狸 is 戴眼镜的灰狐狸;图书馆;",
           ("08", 2): "俯拍;夜幕降临;一支蜡烛在燃烧;;夜晚的图书馆;"},
}
CAST = {("01", 1): ["Mia", "Tom"], ("01", 2): [], ("01", 3): ["Mia"], ("08", 1): ["Old Fox"], ("08", 2): []}


def story_json(sid: str) -> dict:
    """A fresh copy: tests break it freely."""
    return copy.deepcopy({"Story_type": pair("Children's Picture Books", "儿童绘本"), "Characters": CHARACTERS[sid],
                          "Shots": SHOTS[sid]})


def write_story(root: Path, sid: str, data: dict | str, bom: bool = False) -> Path:
    folder = root / sid
    folder.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, indent=1)
    (folder / "story.json").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return folder


def build_dataset(base: Path) -> Path:
    """base/ViStory/{01,08}/story.json and image/<character>/<k>.jpg; returns base (the evaluator's
    --dataset_path)."""
    root = base / "ViStory"
    for sid in SHOTS:
        write_story(root, sid, story_json(sid), bom=sid == "01")
    for n, ((sid, name), count) in enumerate(IMAGES.items()):
        for k in range(count):
            path = root / sid / "image" / name / f"{k:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + 8 * k, 48), (60 * n % 255, 90 + 40 * k, 200 - 50 * n)).save(path, format="JPEG")
    (root / "assets").mkdir()  # not a number: not a story
    return base


# The published full-split leaderboard rows (vistorybench.github.io at 020220e, src/pages/leaderboard_detail.astro)
# of the four baselines in the paper's Table 1, as the evaluator's summary names them.
LEADERBOARD = {
    "UNO": {"cross_csd": 0.39098353966909466, "self_csd": 0.6016575917468682, "cids_cross_mean": 0.457425,
            "cids_self_mean": 0.6090050000000001, "occm": 89.49043000000003, "scene": 3.5099151276328384,
            "camera": 3.2466627281653593, "character_action": 2.7927331146544594},
    "StoryAdapter": {"cross_csd": 0.45594933406141447, "self_csd": 0.5484799006223571,
                     "cids_cross_mean": 0.43043249999999994, "cids_self_mean": 0.6052712500000001,
                     "occm": 86.31226125000003, "scene": 2.0660005503441807, "camera": 3.4463929828631192,
                     "character_action": 2.6055910745695554},
    "StoryDiffusion": {"cross_csd": 0.34035078514500894, "self_csd": 0.5466561996518988,
                       "cids_cross_mean": 0.3982850000000001, "cids_self_mean": 0.5813775000000002,
                       "occm": 84.91701125000003, "scene": 2.004365489384767, "camera": 3.4459912420716337,
                       "character_action": 2.642795583050887},
    "StoryGen": {"cross_csd": 0.3706766686921917, "self_csd": 0.5314512483722901,
                 "cids_cross_mean": 0.37076624999999996, "cids_self_mean": 0.5123274999999999,
                 "occm": 80.26310875000001, "scene": 1.2601337057464903, "camera": 2.288421300883835,
                 "character_action": 1.4221119978474654},
}
# Table 1 of the paper: CSD cross, CSD self, CIDS cross, CIDS self, OCCM, alignment.
PAPER_TABLE_1 = {"StoryGen": (37.1, 53.1, 37.1, 51.2, 80.3, 41.4),
                 "StoryDiffusion": (34.0, 54.7, 39.8, 58.1, 84.9, 67.4),
                 "StoryAdapter": (45.6, 54.8, 43.0, 60.5, 86.3, 67.7),
                 "UNO": (39.1, 60.2, 45.7, 60.9, 89.5, 79.6)}


def summary_json(method: str = "storyloop", mode: str = "base", language: str = "en",
                 timestamp: str = "20260102_120000", figures: dict | None = None) -> dict:
    """A summary.json as the evaluator's ResultManager.compute_and_save_summary writes it (story means under
    each metric's "metrics"; diversity's scores.json with its metric and scope)."""
    f = figures or LEADERBOARD["UNO"]
    return {"run": {"method": method, "mode": mode, "language": language, "dataset": "ViStory",
                    "timestamp": timestamp},
            "metrics": {
                "cids": {"metrics": {"cids_self_mean": f["cids_self_mean"], "cids_cross_mean": f["cids_cross_mean"],
                                     "copy_paste_score": 0.125, "occm": f["occm"], "single_character_action": 2}},
                "csd": {"metrics": {"self_csd": f["self_csd"], "cross_csd": f["cross_csd"]}},
                "aesthetic": {"metrics": {"aesthetic_score": 5.2315}},
                "prompt_align": {"metrics": {"scene": f["scene"], "character_action": f["character_action"],
                                             "camera": f["camera"]}},
                "diversity": {"metric": {"name": "diversity"}, "scope": {"level": "dataset"},
                              "metrics": {"inception_score": 12.4, "inception_score_std": 0.8}}}}


def write_summary(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=4), encoding="utf-8")
    return path
