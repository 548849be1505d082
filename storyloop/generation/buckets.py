"""Aspect-ratio buckets: image sizes of about one area, so images of many shapes train and condition as they are.

A bucket is a (width, height) of about `resolution**2` pixels whose sides are multiples of the model's
size factor (16 for FLUX: the VAE's 8, then 2x2 token packing), with an aspect ratio w/h between
MIN_ASPECT (1:2) and MAX_ASPECT (2:1): wider or taller images lose their edges rather than train on
a sliver of tokens. An image goes to the bucket nearest its aspect ratio (on a log scale, so 1:2 and
2:1 are equally far from square), is resized to cover it and is cropped at the centre. An image
that already has a bucket's aspect ratio is only resized: a square image at resolution x resolution
is exactly what it was before buckets existed.
"""

from __future__ import annotations

import math

from PIL import Image

MIN_ASPECT = 0.5  # width / height: 1:2, portrait
MAX_ASPECT = 2.0  # 2:1, landscape

Size = tuple[int, int]  # (width, height) in pixels


def buckets(resolution: float, factor: int, min_aspect: float = MIN_ASPECT,
            max_aspect: float = MAX_ASPECT) -> list[Size]:
    """Every bucket of about resolution**2 pixels, sides multiples of `factor`, sorted from tall to wide.

    For each height (a multiple of factor) the width is the multiple of factor nearest area / height;
    portrait buckets are the landscape ones turned, so the list is symmetric. `resolution` may be the
    square root of any area (e.g. of a 1360 x 768 target).
    """
    if resolution < factor or factor < 1:
        raise ValueError(f"resolution {resolution} is smaller than the model's size factor {factor}")
    area = resolution * resolution
    landscape = set()
    for height in range(factor, math.floor(resolution) + factor, factor):
        width = max(factor, round(area / height / factor) * factor)
        if height <= width and width / height <= max_aspect:
            landscape.add((width, height))
    if not landscape:  # no fit within the aspect range: the nearest square
        side = max(factor, round(resolution / factor) * factor)
        landscape.add((side, side))
    found = landscape | {(h, w) for w, h in landscape if min_aspect <= h / w}
    return sorted(found, key=lambda s: (s[0] / s[1], s[0]))


def nearest_bucket(width: int, height: int, sizes: list[Size]) -> Size:
    """The bucket whose aspect ratio is nearest width / height (log scale; ties: the first in `sizes`)."""
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height} is empty")
    aspect = math.log(width / height)
    return min(sizes, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))


def cover_box(width: int, height: int, size: Size) -> tuple[float, float, float, float]:
    """The centred box (left, top, right, bottom) of an image of width x height with `size`'s aspect ratio.

    The largest such box: the image covers `size` after resizing, and only the overhang is cropped.
    An image of the same aspect ratio keeps all of itself (the box is the whole image, in integers).
    """
    tw, th = size
    if width * th == height * tw:
        return (0, 0, width, height)
    if width * th > height * tw:  # wider than the bucket: crop left and right
        keep = height * tw / th
        left = (width - keep) / 2
        return (left, 0, left + keep, height)
    keep = width * th / tw  # taller: crop top and bottom
    top = (height - keep) / 2
    return (0, top, width, top + keep)


def fit_image(image: Image.Image, size: Size) -> Image.Image:
    """`image` as RGB at `size` = (width, height): resized to cover it, centre-cropped (bicubic)."""
    image = image.convert("RGB")
    return image.resize(size, Image.BICUBIC, box=cover_box(*image.size, size))


def bucket_for(width: int, height: int, resolution: float, factor: int) -> Size:
    """The bucket of about resolution**2 pixels an image of width x height goes to."""
    return nearest_bucket(width, height, buckets(resolution, factor))


def reference_size(width: int, height: int, target: Size, factor: int) -> Size:
    """The size a reference of width x height is encoded at for targets of `target` = (width, height):
    its own aspect ratio's bucket among those of about the target's area. Generation and DPO training
    both use it, so a reference conditions a target the same way in both.
    """
    return bucket_for(width, height, math.sqrt(target[0] * target[1]), factor)


def downscaled_size(width: int, height: int, max_area: int, factor: int) -> Size:
    """An image's own size, made fit for the model: scaled down (keeping aspect) to at most `max_area`
    pixels if larger, then each side rounded down to a multiple of `factor` (at least one factor).

    A size whose sides are already multiples of factor and whose area is at most max_area is unchanged.
    """
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    return (max(factor, int(width * scale) // factor * factor), max(factor, int(height * scale) // factor * factor))
