"""Text out of illustrations (section 3.2's structure-aware inpainting): find text boxes, then fill them in.

Both halves plug in. Boxes come from a zero-shot object detector through transformers'
"zero-shot-object-detection" pipeline (OWLv2, OWL-ViT, GroundingDINO; queried with "text") or from a
`module:function` callable. The fill is OpenCV's cv2.inpaint (Telea or Navier-Stokes) or a `module:function`
callable, e.g. a LaMa or diffusion inpainter. Only the masked pixels may change.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from storyloop.data.cache import StageCache, content_key
from storyloop.data.models import DataModelError, model_identity, pick_device

STAGE = "text_removal"
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
OPENCV = {"telea": "INPAINT_TELEA", "ns": "INPAINT_NS"}
_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_plugin(spec: str) -> bool:
    """`package.module:function` (and not a folder of that name)."""
    return bool(_PLUGIN.fullmatch(spec)) and not Path(spec).exists()


def load_plugin(spec: str) -> Callable:
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise DataModelError(f"{STAGE}: cannot load plugin {spec!r} ({exc})") from None
    if not callable(fn):
        raise DataModelError(f"{STAGE}: plugin {spec!r} is not callable")
    return fn


def plugin_identity(spec: str) -> str:
    """What cache keys record for a plugin: its name and its module's source, so an edited plugin redoes."""
    fn = load_plugin(spec)
    try:
        source = inspect.getsource(inspect.getmodule(fn))
    except (OSError, TypeError):
        source = ""
    return f"plugin:{spec}:{hashlib.sha256(source.encode()).hexdigest()}"


def _identity(spec: str) -> str:
    return plugin_identity(spec) if is_plugin(spec) else model_identity(spec)


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
    """Text boxes of one image, from a detector model or a plugin."""

    def __init__(self, spec: str, queries: tuple[str, ...] = ("text",), threshold: float = 0.1,
                 device: str = "auto"):
        self.queries, self.threshold = list(queries), threshold
        if is_plugin(spec):
            self.plugin, self.detector = load_plugin(spec), None
            return
        from transformers import pipeline

        self.plugin = None
        try:
            self.detector = pipeline("zero-shot-object-detection", model=spec, device=pick_device(device))
        except (OSError, ValueError, KeyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataModelError(f"{STAGE}: cannot load detector {spec!r} ({first}); give a local folder, a "
                                 "downloaded hub id or module:function, or pass --no-text-removal") from None

    def __call__(self, image: Image.Image) -> list[Box]:
        if self.plugin is not None:
            raw = self.plugin(image)
        else:
            found = self.detector(image, candidate_labels=self.queries, threshold=self.threshold)
            raw = [(d["box"]["xmin"], d["box"]["ymin"], d["box"]["xmax"], d["box"]["ymax"]) for d in found]
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
        return load_plugin(spec)
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

    identity = content_key(STAGE, _identity(detector), list(queries), threshold, grow,
                           inpainter if inpainter in OPENCV else _identity(inpainter), radius)
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
