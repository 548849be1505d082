"""Images as the judging page shows them: large ones shrink smoothly, small ones grow by whole factors."""

import io

from PIL import Image

from storyloop.annotator.thumbs import display_size, thumbnail


def checkerboard(size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", size)
    img.putdata([(255, 0, 0) if (x + y) % 2 else (0, 0, 255) for y in range(size[1]) for x in range(size[0])])
    return img


def test_a_small_image_grows_by_the_largest_whole_factor_with_every_pixel_a_sharp_square():
    small = checkerboard((64, 40))
    shown = display_size(small, 512)
    assert shown.size == (512, 320)  # x8: the largest factor that fits 512
    assert shown.resize(small.size, Image.Resampling.NEAREST).tobytes() == small.tobytes()
    block = shown.crop((8, 0, 16, 8))  # pixel (1, 0) of the original, now an 8x8 square of one colour
    assert block.getcolors() == [(64, small.getpixel((1, 0)))]
    assert display_size(checkerboard((300, 200)), 512).size == (300, 200)  # under 2x: left as it is


def test_a_large_image_shrinks_to_the_size_asked():
    assert display_size(Image.new("RGB", (1024, 768)), 512).size == (512, 384)


def test_the_thumbnail_of_a_64px_candidate_is_as_large_as_that_of_a_1024px_one(tmp_path):
    for name, size in (("small", (64, 64)), ("large", (1024, 1024))):
        checkerboard(size).save(tmp_path / f"{name}.png")
    sizes = {name: Image.open(io.BytesIO(thumbnail(tmp_path / f"{name}.png", tmp_path / "cache", 512))).size
             for name in ("small", "large")}
    assert sizes == {"small": (512, 512), "large": (512, 512)}
    assert thumbnail(tmp_path / "missing.png", tmp_path / "cache", 512) is None
