"""Short videos of toy characters with known cuts, written with OpenCV (MJPG in .avi: intra-frame, so every
frame reads back exactly where it was written)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from storyloop.toy.render import render
from storyloop.toy.world import Character, Frame

# Three characters that differ in body colour, shape and hat. Every shot is a close-up in its own scene, and
# each character appears in two scenes, so what ties a character's shots together is the character itself.
CHARACTERS = {
    "red": Character("round", "red", "cap", "black", "none"),
    "blue": Character("square", "blue", "tophat", "white", "scarf"),
    "green": Character("tall", "green", "crown", "pink", "bag"),
}
SIZE = 128
FPS = 24


def close_up(character: str, sky: str, ground: str) -> Image.Image:
    """The character big in the middle of the scene, cropped around it and scaled to SIZE."""
    wide = render(Frame(CHARACTERS[character], "flat", sky, ground, "middle", "big"), 2 * SIZE)
    return wide.crop((int(0.28 * 2 * SIZE), int(0.32 * 2 * SIZE), int(0.68 * 2 * SIZE), int(0.92 * 2 * SIZE))) \
        .resize((SIZE, SIZE), Image.LANCZOS)


def shot_frames(character: str, scene: tuple[str, str], length: int, pan: int = 1,
                start: int = 0) -> list[np.ndarray]:
    """`length` BGR frames of one character in a (sky, ground) scene, from frame `start` of the video on. The
    camera sways sideways `pan` px per frame (a triangle wave, within 8 px of the centre) and drifts down 1 px
    every 8 frames, so in a video under 128 frames no two frames are the same picture."""
    still = np.asarray(close_up(character, *scene))
    frames = []
    for t in range(start, start + length):
        sway = abs(t * pan % 32 - 16) - 8
        shifted = np.roll(still, (t // 8 % 16 - 8, sway), axis=(0, 1))
        frames.append(np.ascontiguousarray(shifted[:, :, ::-1]))
    return frames


def write_video(path: Path, shots: list[tuple[str, tuple[str, str]]], length: int | list[int] = 24,
                pan: int = 1) -> list[tuple[int, int]]:
    """Write the shots (character, (sky, ground)) one after another, each `length` frames long (or its own
    length from a list); returns each shot's [start, end) frames."""
    lengths = length if isinstance(length, list) else [length] * len(shots)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE, SIZE))
    assert writer.isOpened(), "this OpenCV cannot write MJPG"
    bounds, start = [], 0
    for (character, scene), n in zip(shots, lengths, strict=True):
        for frame in shot_frames(character, scene, n, pan, start):
            writer.write(frame)
        bounds.append((start, start + n))
        start += n
    writer.release()
    return bounds
