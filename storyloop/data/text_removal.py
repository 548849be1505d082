"""Text out of illustrations (section 3.2's structure-aware inpainting): find text boxes, then fill them in.

Both halves plug in. Boxes come from a zero-shot object detector through transformers'
"zero-shot-object-detection" pipeline (OWLv2, OWL-ViT, GroundingDINO; queried with "text") or from a
`module:function` callable. The fill is OpenCV's cv2.inpaint (Telea or Navier-Stokes) or a `module:function`
callable, e.g. a LaMa or diffusion inpainter. Only the masked pixels may change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from storyloop.data.cache import StageCache, content_key
from storyloop.data.models import DataModelError
from storyloop.data.plugins import identity as plugin_or_model
from storyloop.data.plugins import is_plugin, load_plugin

STAGE = "text_removal"
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
OPENCV = {"telea": "INPAINT_TELEA", "ns": "INPAINT_NS"}


def clip_box(box, width: int, height: int) -> Box | None:
    """A box as whole pixels inside the image, or None when nothing of it is inside."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataModelError(f"{STAGE}: a box must be (x0, y0, x1, y1), got {box!r}") from None
    x0, y0 = max(0, int(np.floor(min(x0, x1)))), max(0, int(np.floor(min(y0, y1))))
    x1, y1 = min(width, int(np.ceil(max(x0, x1)))), min(height, int(np.ceil(max(y0, y1))))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class BoxFinder:
    """Text boxes of one image, from a zero-shot detector model (the same Detector that finds characters)
    or a plugin."""

    def __init__(self, spec: str, queries: tuple[str, ...] = ("text",), threshold: float = 0.1,
                 device: str = "auto"):
        if is_plugin(spec):
            self.plugin, self.detector = load_plugin(spec, STAGE), None
            return
        from storyloop.data.detect import Detector

        self.plugin = None
        self.detector = Detector(spec, ". ".join(queries), threshold, device=device, stage=STAGE)

    def __call__(self, image: Image.Image) -> list[Box]:
        if self.plugin is not None:
            raw = self.plugin(image)
        else:
            raw = [d["box"] for d in self.detector([image])[0]]
        boxes = [clip_box(b, image.width, image.height) for b in raw]
        return sorted({b for b in boxes if b is not None})


def make_inpainter(spec: str = "telea", radius: int = 5) -> Callable[[Image.Image, Image.Image], Image.Image]:
    """(image, mask) -> image: OpenCV's inpainting by name, or a plugin."""
    if spec in OPENCV:
        import cv2

        flag = getattr(cv2, OPENCV[spec])

        def opencv(image: Image.Image, mask: Image.Image) -> Image.Image:
            return Image.fromarray(cv2.inpaint(np.asarray(image), np.asarray(mask), radius, flag))

        return opencv
    if is_plugin(spec):
        return load_plugin(spec, STAGE)
    raise DataModelError(f"{STAGE}: inpainter must be telea, ns or module:function, got {spec!r}")


def text_mask(size: tuple[int, int], boxes: list[Box], grow: int) -> Image.Image:
    """An 'L' mask, 255 inside every box grown by `grow` pixels."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 - grow, y0 - grow, x1 - 1 + grow, y1 - 1 + grow], fill=255)
    return mask


def remove_text(image: Image.Image, boxes: list[Box], grow: int, inpaint: Callable) -> Image.Image:
    """The image with its boxes filled in; pixels outside the mask are kept exactly, whatever the inpainter
    does there."""
    if not boxes:
        return image
    mask = text_mask(image.size, boxes, grow)
    filled = inpaint(image, mask)
    if not isinstance(filled, Image.Image) or filled.size != image.size:
        raise DataModelError(f"{STAGE}: the inpainter must return a PIL image of size {image.size}")
    return Image.composite(filled.convert("RGB"), image, mask)


def remove_text_pages(images: dict[str, Path], *, detector: str, queries: tuple[str, ...], threshold: float,
                      grow: int, inpainter: str, radius: int, device: str, cache: StageCache,
                      progress: bool = True) -> tuple[dict[str, dict], int]:
    """For images {key: PNG path}: {key: {"image": cleaned PNG path relative to the cache, "boxes": [...]}},
    each cached by image, detector, inpainter and knobs (the detector loads only when some page is missing).
    Returns (results, how many pages were computed now)."""
    from tqdm.auto import tqdm

    identity = content_key(STAGE, plugin_or_model(detector, STAGE), list(queries), threshold, grow,
                           inpainter if inpainter in OPENCV else plugin_or_model(inpainter, STAGE), radius)
    results: dict[str, dict] = {}
    todo = []
    for key in images:
        cached = cache.get(STAGE, content_key(key, identity))
        if cached is None:
            todo.append(key)
        else:
            results[key] = cached
    if todo:
        find, inpaint = BoxFinder(detector, queries, threshold, device), make_inpainter(inpainter, radius)
        for key in tqdm(todo, desc="text removal", unit="page", disable=not progress, leave=False):
            page = Image.open(images[key]).convert("RGB")
            boxes = find(page)
            cleaned = cache.put_image(remove_text(page, boxes, grow, inpaint)) if boxes else Path(images[key])
            results[key] = {"image": str(cleaned.relative_to(cache.root)), "boxes": [list(b) for b in boxes]}
            cache.put(STAGE, content_key(key, identity), results[key])
    return results, len(todo)
