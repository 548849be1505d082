"""ViStoryBench as distributed: reading and checking `ViStory/<NN>/story.json` and its character images, and
turning each shot into a frame (story, shot index, prompt, each character's reference images).

The layout and field names follow the official loader (ViStoryBench/vistorybench at 514cc31,
vistorybench/dataset_loader/dataset_load.py): only numeric story folders count, story.json may start with a
UTF-8 BOM, a shot's `Characters Appearing` holds the English names (the keys of `Characters`, and the names of
the image folders) under `en` and the shown names under each language.

The prompt is the one the benchmark's own baselines were given (its `story_prompt_merge`):

    camera;plot;script;<name> is <character prompt>;...;scene;

with `<name>` the shot's name for the character in the chosen language and `<character prompt>` the
character's `prompt_<lang>`. We keep it to the byte, quirks included (a shot without characters gives `;;`
before the scene), so that a storyloop round and the published baselines answer the same text and differences
in the scores are the models', not the prompts'. FLUX reads 512 T5 tokens and 77 CLIP tokens of it: camera,
plot and script come first, so a long cast's descriptions, and then the scene, are what a long prompt loses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from storyloop.characters import MAX_NAME
from storyloop.db.rounds import ImportValidationError

LANGUAGES = ("en", "ch")
SPLITS = ("full", "lite")
# The Lite split: 20 fixed stories of the 80 (dataset_load.py's LITE_DATA).
LITE_STORIES = ("01", "08", "09", "15", "17", "19", "24", "27", "28", "29", "32", "41", "52", "53", "55", "57",
                "60", "64", "68", "79")
EVALUATOR_REPO = "ViStoryBench/vistorybench"
EVALUATOR_COMMIT = "514cc31"
PROMPT_TEMPLATE = "vistorybench-baseline"  # the name a round records for the template above
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what the official loader takes as a character image
TEXT_FIELDS = {"camera": "Shot Perspective Design", "plot": "Plot Correspondence",
               "script": "Static Shot Description", "scene": "Setting Description"}
CHARACTERS_FIELD = "Characters Appearing"


class DatasetError(ImportValidationError):
    """The dataset has problems; `problems` names each with its story (and shot). Nothing was imported."""


@dataclass(frozen=True)
class Frame:
    """One shot as storyloop generates it: `references` maps each character in the shot (English name, the
    order the shot names them) to its reference images."""

    story_id: str
    frame_index: int  # the shot's `index`, from 1
    prompt: str
    references: dict[str, list[Path]] = field(default_factory=dict)


def shot_prompt(camera: str, plot: str, script: str, cast: Sequence[tuple[str, str]], scene: str) -> str:
    """The baselines' prompt: camera;plot;script;<name> is <prompt>;...;scene; (cast: (name, prompt) pairs)."""
    characters = ";".join(f"{name} is {prompt}" for name, prompt in cast)
    return f"{camera};{plot};{script};{characters};{scene};"


def dataset_root(path: Path) -> Path:
    """The folder holding the story folders: `path/ViStory` when there is one (the evaluator's
    --dataset_path), else `path` itself."""
    path = Path(path)
    return path / "ViStory" if (path / "ViStory").is_dir() else path


def story_ids(root: Path, split: str = "full") -> list[str]:
    """The numeric story folders under `root`, in numeric order; for `lite` only the Lite stories."""
    if split not in SPLITS:
        raise DatasetError(root, [f"split {split!r}: must be one of {', '.join(SPLITS)}"])
    found = sorted((p.name for p in Path(root).iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    return [s for s in found if split == "full" or s in LITE_STORIES]


def character_images(story_dir: Path, character: str) -> list[Path]:
    """A character's reference images, by file name (as the official loader sorts them)."""
    folder = Path(story_dir) / "image" / character
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def story_frames(story_dir: Path, language: str = "en", refs_per_character: int | None = None) -> list[Frame]:
    """Every shot of one story folder as a frame, in the order of `Shots`; DatasetError lists every problem.

    `refs_per_character`: at most this many images per character (the first by file name); None: all."""
    frames, problems = _read_story(Path(story_dir), language, refs_per_character)
    if problems:
        raise DatasetError(story_dir, problems)
    return frames


def _read_story(story_dir: Path, language: str, refs: int | None) -> tuple[list[Frame], list[str]]:
    """(frames, problems) of one story folder; frames only when there is no problem."""
    sid = story_dir.name
    if language not in LANGUAGES:
        return [], [f"language {language!r}: must be one of {', '.join(LANGUAGES)}"]
    if refs is not None and refs < 1:
        return [], [f"refs_per_character {refs}: must be at least 1"]
    where = f"story {sid}"
    data, problem = _load_json(story_dir / "story.json")
    if problem:
        return [], [f"{where}: {problem}"]
    if not isinstance(data, dict):
        return [], [f"{where}: story.json: expected a JSON object, got {type(data).__name__}"]
    problems: list[str] = []
    characters = data.get("Characters")
    if not isinstance(characters, dict):
        problems.append(f"{where}: field 'Characters': expected an object keyed by English name")
        characters = {}
    prompts: dict[str, str] = {}
    for key, entry in characters.items():
        if not key.strip() or key in (".", "..") or "/" in key or "\\" in key or len(key) > MAX_NAME:
            problems.append(f"{where}: character {key!r}: not a usable folder name under image/")
            continue
        text = entry.get(f"prompt_{language}") if isinstance(entry, dict) else None
        if not isinstance(text, str):
            problems.append(f"{where}: character {key!r}: field 'prompt_{language}' is missing or not text")
        else:
            prompts[key] = text.strip()
    shots = data.get("Shots")
    if not isinstance(shots, list) or not shots:
        return [], problems + [f"{where}: field 'Shots': expected a non-empty list of shots"]

    frames: list[Frame] = []
    first_at: dict[int, int] = {}  # shot index -> its position in Shots
    first_named: dict[str, str] = {}  # character -> the shot that first names it
    for pos, shot in enumerate(shots, start=1):
        index = shot.get("index") if isinstance(shot, dict) else None
        good_index = isinstance(index, int) and not isinstance(index, bool) and index >= 1
        here = f"{where} shot {index}" if good_index else f"{where} shot #{pos} (its place in Shots)"
        if not isinstance(shot, dict):
            problems.append(f"{here}: expected a JSON object, got {type(shot).__name__}")
            continue
        if not good_index:
            problems.append(f"{here}: field 'index': expected a whole number from 1, got {index!r}")
        elif index in first_at:
            problems.append(f"{here}: index {index} repeats (first at #{first_at[index]} in Shots)")
        else:
            first_at[index] = pos
        texts = {}
        for name, field_name in TEXT_FIELDS.items():
            value = shot.get(field_name)
            text = value.get(language) if isinstance(value, dict) else None
            if not isinstance(text, str):
                problems.append(f"{here}: field {field_name!r}: expected an object with {language!r} text")
            texts[name] = (text or "").strip()
        cast = _cast(shot.get(CHARACTERS_FIELD), language, here, problems)
        for key, _ in cast:
            if key not in characters:
                known = ", ".join(repr(k) for k in characters) or "none"
                problems.append(f"{here}: {CHARACTERS_FIELD!r} names {key!r}, who is not in Characters "
                                f"(known: {known})")
            else:
                first_named.setdefault(key, here)
        if problems:
            continue
        frames.append(Frame(sid, index, shot_prompt(texts["camera"], texts["plot"], texts["script"],
                                                    [(shown, prompts[key]) for key, shown in cast], texts["scene"]),
                            {key: [] for key, _ in cast}))

    images: dict[str, list[Path]] = {}
    for key, first in first_named.items():
        if key not in prompts:  # already reported: an unusable name or no prompt
            continue
        found = character_images(story_dir, key)
        if not found:
            folder = story_dir / "image" / key
            what = "has no .png/.jpg images" if folder.is_dir() else "is missing"
            problems.append(f"{first}: character {key!r}: image folder {folder} {what}")
        images[key] = found[:refs] if refs else found
    if problems:
        return [], problems
    return [Frame(f.story_id, f.frame_index, f.prompt, {k: images[k] for k in f.references}) for f in frames], []


def _load_json(path: Path) -> tuple[object, str | None]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # the distributed files may start with a BOM
    except FileNotFoundError:
        return None, f"no {path.name} in {path.parent}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: cannot read ({exc})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


def _cast(value: object, language: str, here: str, problems: list[str]) -> list[tuple[str, str]]:
    """(English name, name shown in `language`) of each character of a shot, checked."""
    lists = {lang: value.get(lang) for lang in {"en", language}} if isinstance(value, dict) else {}
    if not lists or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in lists.values()):
        problems.append(f"{here}: field {CHARACTERS_FIELD!r}: expected an object with 'en' and {language!r} "
                        "lists of names")
        return []
    keys, shown = lists["en"], lists[language]
    if len(keys) != len(shown):
        problems.append(f"{here}: field {CHARACTERS_FIELD!r}: 'en' names {len(keys)} character(s), {language!r} "
                        f"names {len(shown)}")
        return []
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        problems.append(f"{here}: field {CHARACTERS_FIELD!r} names {', '.join(map(repr, repeated))} twice")
        return []
    return [(k, s.strip()) for k, s in zip(keys, shown)]


@dataclass
class DatasetFrames:
    """What `read_dataset` found: the folder it read, the stories taken, and their frames."""

    root: Path
    split: str
    language: str
    stories: list[str]
    split_size: int  # stories of the split in the dataset (Lite: of the 20)
    frames: list[Frame]


def read_dataset(path: Path, split: str = "full", language: str = "en", stories: Sequence[str] | None = None,
                 refs_per_character: int | None = None) -> DatasetFrames:
    """Every frame of the split's stories (or of `stories`, which must be in the split), every story checked
    before anything is returned; DatasetError lists all problems, each with its story and shot."""
    root = dataset_root(path)
    if not root.is_dir():
        raise DatasetError(path, [f"no such folder: {path}"])
    if language not in LANGUAGES:
        raise DatasetError(root, [f"language {language!r}: must be one of {', '.join(LANGUAGES)}"])
    available = story_ids(root, split)
    if not available:
        raise DatasetError(root, [f"no {'Lite ' if split == 'lite' else ''}story folders (01, 02, …) in {root}"])
    chosen = available
    if stories:
        chosen = [s.strip() for s in stories]
        unknown = [s for s in chosen if s not in available]
        if unknown:
            hint = " (not a Lite story)" if split == "lite" else ""
            raise DatasetError(root, [f"story {s}: not in {root}{hint}" for s in unknown])
        chosen = sorted(set(chosen), key=int)
    frames: list[Frame] = []
    problems: list[str] = []
    for sid in chosen:
        found, issues = _read_story(root / sid, language, refs_per_character)
        frames += found
        problems += issues
    if problems:
        raise DatasetError(root, problems)
    return DatasetFrames(root, split, language, chosen, len(available), frames)
