"""The toy story world: characters, scenes, styles and stories, all procedural and seeded.

A character's identity is five attributes (body shape and colour, hat and hat colour, accessory).
A story has one protagonist, one drawing style shared by all its frames, and 4-8 frames, each in
a scene (sky and ground) with the protagonist at some place and size, sometimes with a companion
(a second character, drawn small on the right; `companion_share` of the frames, 0.3 unless asked).
Because everything is generated from attributes, every image has exact ground truth.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

SHAPES = ("round", "square", "tall", "pointy")
COLORS = {"red": (214, 48, 49), "blue": (40, 90, 220), "green": (46, 160, 67), "yellow": (240, 200, 30),
          "purple": (140, 60, 190), "orange": (245, 130, 30)}
HATS = ("none", "cap", "tophat", "crown")
HAT_COLORS = {"black": (25, 25, 25), "white": (245, 245, 245), "pink": (250, 120, 190), "brown": (120, 70, 30)}
ACCESSORIES = ("none", "scarf", "bag", "stick")
SKIES = {"day": (150, 200, 250), "night": (20, 24, 70), "sunset": (250, 160, 110), "fog": (190, 190, 200)}
GROUNDS = {"grass": (70, 150, 60), "sand": (225, 200, 130), "snow": (240, 245, 250), "stone": (120, 120, 125)}
STYLES = ("flat", "outlined", "striped", "pastel")
PLACES = ("left", "middle", "right")
ASIDE = "aside"  # one more place, never drawn at random: where a companion stands (a character's own reference)
SIZES = ("small", "big")

IDENTITY = ("shape", "color", "hat", "hat_color", "accessory")
COMPANION_SHARE = 0.3  # share of a story's frames with a companion, unless asked otherwise


@dataclass(frozen=True)
class Character:
    shape: str
    color: str
    hat: str
    hat_color: str
    accessory: str

    def key(self) -> str:
        return "-".join(getattr(self, a) for a in IDENTITY)


@dataclass(frozen=True)
class Frame:
    protagonist: Character
    style: str
    sky: str
    ground: str
    place: str  # where the protagonist stands
    size: str
    companion: Character | None = None  # a second character, drawn on the other side

    @property
    def count(self) -> int:
        return 1 + (self.companion is not None)

    @property
    def cast(self) -> list[tuple[str, Character]]:
        """(role, character) of everyone in the frame: the protagonist, then the companion if any."""
        return [("protagonist", self.protagonist)] + ([("companion", self.companion)] if self.companion else [])

    def truth(self) -> dict:
        """Ground-truth labels of this frame, as the attribute readers report them: the protagonist's identity
        under the attribute names, the companion's as companion_<attribute> (None without a companion)."""
        second = {f"companion_{a}": getattr(self.companion, a) if self.companion else None for a in IDENTITY}
        return {**{a: getattr(self.protagonist, a) for a in IDENTITY}, **second, "style": self.style,
                "sky": self.sky, "ground": self.ground, "count": self.count}


@dataclass
class Story:
    story_id: str
    protagonist: Character
    style: str
    frames: list[Frame] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def all_characters() -> list[Character]:
    return [Character(s, c, h, hc, a) for s in SHAPES for c in COLORS for h in HATS for hc in HAT_COLORS
            for a in ACCESSORIES]


def _shuffled_characters(seed: int) -> list[Character]:
    """Every character in one seeded order: the held-out ones are its head, the training ones follow."""
    chars = all_characters()
    random.Random(seed).shuffle(chars)
    return chars


def split_characters(seed: int = 0, held_out: int = 24, train: int = 96) -> tuple[list[Character], list[Character]]:
    """Training characters and held-out characters (never in any training set), disjoint."""
    chars = _shuffled_characters(seed)
    return chars[held_out:held_out + train], chars[:held_out]


def preference_characters(seed: int = 0, held_out: int = 24) -> list[Character]:
    """Every character except the held-out ones, in a seeded order: who may appear in a judged round.

    Stage-1 and the base learn from the training characters only; a preference round may show anyone
    but the held-out, so DPO sees many identities and cannot learn one character's look."""
    rest = _shuffled_characters(seed)[held_out:]
    random.Random(seed + 1).shuffle(rest)
    return rest


def unseen_characters(seen: list[Character], seed: int = 0) -> list[Character]:
    """Preference characters (never the held-out) outside `seen`: new faces for validation stories."""
    exclude = set(seen)
    return [c for c in preference_characters(seed) if c not in exclude]


def random_frame(rng: random.Random, protagonist: Character, style: str, companions: list[Character],
                 two_prob: float = COMPANION_SHARE) -> Frame:
    companion = None
    if rng.random() < two_prob:
        companion = rng.choice([c for c in companions if c != protagonist])
    place = rng.choice(("left", "middle") if companion else PLACES)
    return Frame(protagonist, style, rng.choice(list(SKIES)), rng.choice(list(GROUNDS)), place,
                 rng.choice(SIZES), companion)


def make_story(rng: random.Random, story_id: str, protagonist: Character, companions: list[Character],
               min_frames: int = 4, max_frames: int = 8, companion_share: float = COMPANION_SHARE) -> Story:
    style = rng.choice(STYLES)
    story = Story(story_id, protagonist, style)
    length = rng.randint(min_frames, max_frames)
    story.frames = [random_frame(rng, protagonist, style, companions, companion_share) for _ in range(length)]
    return story


def make_stories(characters: list[Character], n: int, seed: int, prefix: str,
                 companion_share: float = COMPANION_SHARE) -> list[Story]:
    """`n` stories, protagonists in turn from `characters`; `companion_share` of the frames (in expectation)
    show a second character too. The default keeps every story as it always was for a seed."""
    if not 0.0 <= companion_share <= 1.0:
        raise ValueError(f"companion_share must be between 0 and 1 (got {companion_share})")
    rng = random.Random(seed)
    return [make_story(rng, f"{prefix}{i:04d}", characters[i % len(characters)], characters,
                       companion_share=companion_share) for i in range(n)]


def alone(character: Character, style: str, rng: random.Random) -> Frame:
    """`character` drawn by itself in `style`, exactly where and as large as a companion stands (ASIDE, small),
    in a random scene: how a companion's own reference image looks. In GSA a target's token reads the
    reference token at its own row and column most easily, so the companion is drawn where it will stand."""
    return Frame(character, style, rng.choice(list(SKIES)), rng.choice(list(GROUNDS)), ASIDE, "small")


# -- captions -------------------------------------------------------------------------------------------

_SHAPE_WORDS = {"round": ["round", "roundish", "ball-shaped"], "square": ["square", "boxy", "blocky"],
                "tall": ["tall", "lanky", "long"], "pointy": ["pointy", "triangular", "cone-shaped"]}
_CREATURE = ["creature", "critter", "little figure", "character", "blob"]
_HAT_WORDS = {"cap": ["cap", "baseball cap"], "tophat": ["top hat", "tall hat"], "crown": ["crown", "little crown"]}
_ACC_WORDS = {"scarf": ["a scarf", "a scarf around its neck"], "bag": ["a bag", "a small bag"],
              "stick": ["a stick", "a walking stick"]}
_SKY_WORDS = {"day": ["on a sunny day", "under a clear blue sky", "in daylight"],
              "night": ["at night", "under the night sky", "in the dark of night"],
              "sunset": ["at sunset", "in the evening glow", "under an orange sunset sky"],
              "fog": ["on a foggy day", "in the fog", "under a grey misty sky"]}
_GROUND_WORDS = {"grass": ["on the grass", "in a meadow", "on green grass"], "sand": ["on the sand", "on a beach"],
                 "snow": ["in the snow", "on a snowy field"], "stone": ["on stone ground", "on a rocky path"]}
_PLACE_WORDS = {"left": ["on the left", "at the left"], "middle": ["in the middle", "in the center"],
                "right": ["on the right", "at the right"], ASIDE: ["on the right", "at the right"]}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe_character(ch: Character, rng: random.Random, detail: str) -> str:
    """`detail`: "full" names every attribute; "partial" some; "none" just a creature."""
    noun = rng.choice(_CREATURE)
    if detail == "none":
        return f"a {noun}"
    shape, color = rng.choice(_SHAPE_WORDS[ch.shape]), ch.color
    if detail == "partial":
        return _article(f"{rng.choice([shape, color])} {noun}")
    parts = []
    if ch.hat != "none":
        parts.append(f"a {ch.hat_color} {rng.choice(_HAT_WORDS[ch.hat])}")
    if ch.accessory != "none":
        parts.append(rng.choice(_ACC_WORDS[ch.accessory]))
    tail = ""
    if parts:
        verb = rng.choice(["wearing", "with"]) if ch.hat != "none" else "with"
        tail = f" {verb} " + " and ".join(parts)
    return _article(f"{color} {shape} {noun}{tail}")


def caption(frame: Frame, rng: random.Random, detail: str = "full") -> str:
    """A natural caption of the frame, as a captioner would write it (style is left to the picture)."""
    who = describe_character(frame.protagonist, rng, detail)
    sky, ground = rng.choice(_SKY_WORDS[frame.sky]), rng.choice(_GROUND_WORDS[frame.ground])
    where = rng.choice(_PLACE_WORDS[frame.place])
    size = "big " if frame.size == "big" and rng.random() < 0.5 else ""
    if size:
        who = "a " + size + who.split(" ", 1)[1]
    second = ""
    if frame.companion is not None:
        second = rng.choice([" next to ", " beside ", " with "]) + describe_character(
            frame.companion, rng, "partial" if detail != "none" else "none")
    templates = [
        "{who}{second} stands {where} {ground} {sky}.",
        "{sky_c}, {who}{second} {where} {ground}.",
        "{who_c}{second} {ground} {sky}, {where}.",
        "there is {who}{second} {where}, {ground} {sky}.",
    ]
    t = rng.choice(templates)
    text = t.format(who=who, who_c=who[0].upper() + who[1:], second=second, where=where, ground=ground, sky=sky,
                    sky_c=sky[0].upper() + sky[1:])
    return text[0].upper() + text[1:]


def vocabulary() -> list[str]:
    """Every word a caption can use (the tokenizer's vocabulary)."""
    glue = {"a", "the", "and", "with", "wearing", "its", "big", "an", "there", "is", "stands", "next", "to", "beside",
            ".", ","}
    words = set(SHAPES) | set(COLORS) | set(HAT_COLORS) | glue
    for table in (_SHAPE_WORDS, _HAT_WORDS, _ACC_WORDS, _SKY_WORDS, _GROUND_WORDS, _PLACE_WORDS):
        for options in table.values():
            for o in options:
                words |= set(o.replace("-", " - ").split())
    for c in _CREATURE:
        words |= set(c.split())
    return sorted(w.lower() for w in words)
