"""Aspect-ratio buckets: sizes, the bucket an image goes to, and the crop that brings it there."""

import math

import numpy as np
import pytest
from PIL import Image

from storyloop.generation.buckets import (MAX_ASPECT, MIN_ASPECT, bucket_for, buckets, cover_box, downscaled_size,
                                          fit_image, nearest_bucket)


@pytest.mark.parametrize("resolution, factor", [(512, 16), (1024, 16), (64, 8), (32, 4), (1000, 16)])
def test_buckets_have_about_the_area_sides_of_the_factor_and_bounded_aspect(resolution, factor):
    sizes = buckets(resolution, factor)
    area = resolution * resolution
    for w, h in sizes:
        assert w % factor == 0 and h % factor == 0
        assert MIN_ASPECT <= w / h <= MAX_ASPECT
        # the width is the multiple of factor nearest area / height: off by at most half a factor
        assert abs(w - area / h) <= factor / 2
    assert sorted(sizes) == sorted({(h, w) for w, h in sizes})  # portrait = landscape turned
    assert [w / h for w, h in sizes] == sorted(w / h for w, h in sizes)
    if resolution % factor == 0:
        assert (resolution, resolution) in sizes


def test_flux_512_buckets_are_the_expected_list():
    landscape = [(w, h) for w, h in buckets(512, 16) if w >= h]
    heights = range(368, 513, 16)  # 2:1 at 512^2 would be 724 x 362; the first height of 16 within 2:1 is 368
    assert landscape == sorted(((round(512 * 512 / h / 16) * 16, h) for h in heights), key=lambda s: s[0] / s[1])
    assert landscape[0] == (512, 512) and landscape[-1] == (720, 368)


def test_an_image_goes_to_the_bucket_nearest_its_aspect_on_a_log_scale():
    sizes = buckets(512, 16)
    assert nearest_bucket(1000, 1000, sizes) == (512, 512)
    assert nearest_bucket(1360, 768, sizes) == min(sizes, key=lambda s: abs(math.log(s[0] / s[1] * 768 / 1360)))
    assert nearest_bucket(5000, 100, sizes) == max(sizes, key=lambda s: s[0] / s[1])  # beyond 2:1: the widest
    assert nearest_bucket(100, 5000, sizes) == min(sizes, key=lambda s: s[0] / s[1])
    assert bucket_for(768, 1360, 512, 16) == tuple(reversed(nearest_bucket(1360, 768, sizes)))
    with pytest.raises(ValueError, match="empty"):
        nearest_bucket(0, 10, sizes)


def test_cover_box_keeps_the_largest_centred_region_of_the_bucket_aspect():
    assert cover_box(64, 64, (64, 64)) == (0, 0, 64, 64)
    assert cover_box(96, 64, (48, 32)) == (0, 0, 96, 64)  # same aspect: the whole image
    assert cover_box(100, 50, (50, 50)) == (25.0, 0, 75.0, 50)  # wider: sides cut
    assert cover_box(50, 100, (50, 25)) == (0, 37.5, 50, 62.5)  # taller: top and bottom cut


def test_fit_image_of_the_same_aspect_is_a_plain_resize():
    """Square images at a square size are what `resize` gave before buckets: bit for bit."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(fit_image(img, (32, 32))), np.asarray(img.resize((32, 32), Image.BICUBIC)))
    assert np.array_equal(np.asarray(fit_image(img, (40, 40))), np.asarray(img))


def test_fit_image_crops_instead_of_stretching():
    """A 2:1 image into a square: its centre half survives, its outer quarters are cut."""
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    img[:, :16] = (255, 0, 0)  # left quarter red
    img[:, 48:] = (0, 0, 255)  # right quarter blue
    img[:, 16:48] = (0, 255, 0)  # centre green
    out = np.asarray(fit_image(Image.fromarray(img), (32, 32)))
    assert out.shape == (32, 32, 3)
    assert (out[:, 1:-1, 1] > 240).all() and (out[:, 1:-1, 0] < 15).all() and (out[:, 1:-1, 2] < 15).all()
    gray = Image.fromarray(img).convert("L")
    assert fit_image(gray, (16, 8)).mode == "RGB"  # same aspect, any mode: RGB out


def test_downscaled_size_keeps_fitting_sizes_and_shrinks_large_ones():
    assert downscaled_size(1360, 768, 1024 * 1024, 16) == (1360, 768)
    assert downscaled_size(96, 64, 64 * 64, 16) == (64, 48)  # 6144 px > 4096: scale 0.816, floor to 16
    assert downscaled_size(1000, 1000, 1024 * 1024, 16) == (992, 992)  # sides rounded down to the factor
    assert downscaled_size(10, 10, 4096, 16) == (16, 16)  # never below one factor
    w, h = downscaled_size(4000, 3000, 1024 * 1024, 16)
    assert w * h <= 1024 * 1024 and abs(w / h - 4 / 3) < 0.02
