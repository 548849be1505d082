"""Verifier callables for `--verifier module:function` (no torch import: loading one stays cheap)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _dominant_hue(image: Image.Image) -> int:
    """The most common hue (12 bins) among saturated, not-too-dark pixels."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).reshape(-1, 3).astype(int)
    colored = hsv[(hsv[:, 1] > 100) & (hsv[:, 2] > 60)]
    if len(colored) == 0:
        return -1
    return int(np.bincount(colored[:, 0] * 12 // 256, minlength=12).argmax())


def same_dominant_hue(crop: Image.Image, reference: Image.Image) -> bool:
    """A verifier: the crop's most common saturated colour is the reference's."""
    return _dominant_hue(crop) == _dominant_hue(reference)


def never(crop: Image.Image, reference: Image.Image) -> bool:
    """A verifier that rejects every crop (only each cluster's reference survives)."""
    return False
