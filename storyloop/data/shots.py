"""Shots of a video (PySceneDetect) and the frames sampled inside each shot.

A cut is where consecutive frames differ by more than a threshold in HSV (ContentDetector) or by more
than a multiple of their neighbours' differences (AdaptiveDetector, steadier under camera motion).
Frames are sampled evenly inside each shot, away from its edges, so a sample never straddles a cut.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

SHOT_DETECTORS = ("content", "adaptive")


class BadVideo(ValueError):
    """A file that does not decode to a usable video; the message names the file and says why."""


def detect_shots(path: Path, detector: str = "content", threshold: float = 27.0,
                 min_shot_frames: int = 15) -> list[tuple[int, int]]:
    """The video's shots as [start, end) frame numbers, in order; a video without cuts is one shot."""
    import cv2
    from scenedetect import AdaptiveDetector, ContentDetector, VideoOpenFailure, detect

    if detector == "content":
        det = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames)
    elif detector == "adaptive":
        det = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_shot_frames)
    else:
        raise ValueError(f"shot detector must be one of {', '.join(SHOT_DETECTORS)}, got {detector!r}")
    logging.getLogger("pyscenedetect").setLevel(logging.CRITICAL)  # its warnings repeat what BadVideo says
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadVideo(f"{path}: empty file")
    try:
        scenes = detect(str(path), det, start_in_scene=True)
    except VideoOpenFailure:
        raise BadVideo(f"{path}: not a video OpenCV can open") from None
    except (cv2.error, OSError, ValueError, ZeroDivisionError) as exc:  # what a broken stream raises mid-decode
        raise BadVideo(f"{path}: video does not decode ({type(exc).__name__}: {exc})") from None
    shots = [(start.frame_num, end.frame_num) for start, end in scenes]
    shots = [(a, b) for a, b in shots if b > a]
    if not shots:
        raise BadVideo(f"{path}: no decodable frames")
    return shots


def sample_indices(start: int, end: int, n: int) -> list[int]:
    """`n` frame numbers evenly spaced inside [start, end): the centres of n equal parts (fewer when the
    shot is shorter than n frames)."""
    length = end - start
    if length <= 0 or n <= 0:
        return []
    picks = [start + int((i + 0.5) * length / n) for i in range(n)]
    return sorted(set(picks))


def read_frames(path: Path, indices: list[int]) -> dict[int, Image.Image]:
    """The frames at `indices` (RGB), decoded in one sequential pass: seeking is not frame-exact in every
    codec, reading is. Frames past the stream's real end are missing from the result."""
    import cv2

    wanted = set(indices)
    out: dict[int, Image.Image] = {}
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BadVideo(f"{path}: not a video OpenCV can open")
        last = max(wanted, default=-1)
        for no in range(last + 1):
            if not cap.grab():
                break
            if no in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    out[no] = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    finally:
        cap.release()
    return out
