"""Frame-quality filters for live action (section 3.3: harsh lighting, motion blur, extreme long shots).

Measures are taken on the frame scaled to a fixed width, so one threshold means the same at any resolution.
Animation uses pHash dedup of static frames instead (storyloop.data.dedup.keep_changing).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MEASURE_WIDTH = 256  # px: blur and exposure are measured at this width


def _gray(image: Image.Image) -> np.ndarray:
    if image.width != MEASURE_WIDTH:
        height = max(1, round(image.height * MEASURE_WIDTH / image.width))
        image = image.resize((MEASURE_WIDTH, height), Image.BILINEAR)
    return np.asarray(image.convert("L"), dtype=np.float64)


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian (a motion-blurred or out-of-focus frame has few edges, so a low value)."""
    import cv2

    return float(cv2.Laplacian(_gray(image), cv2.CV_64F).var())


def exposure(image: Image.Image) -> tuple[float, float]:
    """(mean luminance 0-255, fraction of pixels clipped to near black (<=5) or near white (>=250))."""
    gray = _gray(image)
    return float(gray.mean()), float(((gray <= 5) | (gray >= 250)).mean())


def exposure_problem(image: Image.Image, dark_below: float, bright_above: float, max_clipped: float) -> str:
    """Why the frame's lighting is harsh ("too dark", "too bright", "clipped"), or "" when it is fine."""
    mean, clipped = exposure(image)
    if mean < dark_below:
        return "too dark"
    if mean > bright_above:
        return "too bright"
    if clipped > max_clipped:
        return "clipped"
    return ""


def is_long_shot(boxes: list[list[float]], width: int, height: int, min_area: float) -> bool:
    """True when the largest character box covers less than `min_area` of the frame (the subject is a speck)."""
    if not boxes:
        return True
    largest = max((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
    return largest < min_area * width * height
