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
    return wide.crop((int(0.22 * 2 * SIZE), int(0.26 * 2 * SIZE), int(0.74 * 2 * SIZE), int(0.94 * 2 * SIZE))) \
        .resize((SIZE, SIZE), Image.LANCZOS)


def shot_frames(character: str, scene: tuple[str, str], length: int, pan: int = 1) -> list[np.ndarray]:
    """`length` BGR frames of one character in a (sky, ground) scene; the camera pans `pan` px per frame."""
    still = np.asarray(close_up(character, *scene))
    frames = []
    for t in range(length):
        shifted = np.roll(still, (t - length // 2) * pan, axis=1)
        frames.append(np.ascontiguousarray(shifted[:, :, ::-1]))
    return frames


def write_video(path: Path, shots: list[tuple[str, tuple[str, str]]], length: int = 24, pan: int = 1) -> list[tuple[int, int]]:
    """Write the shots (character, (sky, ground)) one after another; returns each shot's [start, end) frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE, SIZE))
    assert writer.isOpened(), "this OpenCV cannot write MJPG"
    bounds, start = [], 0
    for character, scene in shots:
        for frame in shot_frames(character, scene, length, pan):
            writer.write(frame)
        bounds.append((start, start + length))
        start += length
    writer.release()
    return bounds
