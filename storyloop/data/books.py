"""Pipeline A (the paper's section 3.2 and 3.4): picture books into one group of story frames per book.

IN holds books: PDFs, or folders of page images (one folder per book, pages in natural name order). The
stages, each counted in the report (the paper: 10,000 books -> ~12,000 pages -> 4,000 frames):

  pages         PDF pages rendered at `dpi` (pypdfium2), page images decoded; unreadable files are skipped
  resolution    both sides above `min_side` pixels
  narrative     a classifier's narrative score >= `narrative_threshold` (covers, prefaces, layouts go)
  text_removal  text boxes found and inpainted away (optional; the count does not change)
  dedup         near-duplicates within a book by pHash
  min_frames    books with fewer than `min_frames` frames dropped
  captions      frames captioned (by a model or a file; optional)
  groups        books left, one group each

Reading and dedup run over books in worker processes; the model stages run batched in this process, so a
model is loaded once. Every stage's work is cached by content hash, so a rerun redoes nothing.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from storyloop.data.cache import StageCache, content_key
from storyloop.data.captions import caption_frames
from storyloop.data.config import BooksConfig
from storyloop.data.dataset import DatasetExists, Frame, Group, write_dataset
from storyloop.data.dedup import keep_distinct, phash
from storyloop.data.images import BadImage, decode_image
from storyloop.data.parallel import parallel_map
from storyloop.data.report import Report

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
UNITS = {"books": "books", "pages": "pages", "resolution": "pages", "narrative": "pages", "text_removal": "pages",
         "dedup": "pages", "min_frames": "pages", "captions": "pages", "groups": "books"}  # "removed" within a unit


class BooksError(ValueError):
    """The input cannot be used at all (no such folder, no books in it)."""


@dataclass(frozen=True)
class Book:
    name: str  # the group name
    path: str  # the PDF or the folder
    source: str  # its path relative to IN, which frame sources start with


@dataclass
class Page:
    source: str  # "fox.pdf#page=3" or "owl/p03.png"
    page: int  # 1-based, in book order
    image: str  # PNG in the stage cache, relative to its root
    width: int
    height: int
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return Path(self.image).stem


@dataclass
class BooksResult:
    out: Path
    report: Report
    computed: dict[str, int]  # stage -> items worked on now (0 everywhere when a rerun found all in the cache)


def natural_key(name: str) -> list:
    """p2 before p10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def find_books(root: Path, report: Report) -> list[Book]:
    """Every PDF and every folder directly in `root`, by name; other files are reported, not read."""
    root = Path(root)
    if not root.is_dir():
        raise BooksError(f"{root}: no such folder (IN holds PDFs and folders of page images)")
    found = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.append((entry.name, entry))
        elif entry.suffix.lower() == ".pdf":
            found.append((entry.stem, entry))
        else:
            report.skip(str(entry), "books", "not a book (a book is a PDF or a folder of page images)")
    stems = [stem for stem, _ in found]
    return [Book(stem if stems.count(stem) == 1 else entry.name, str(entry), entry.name) for stem, entry in found]


# -- pages ------------------------------------------------------------------------------------------------

def _store(cache: StageCache, image: Image.Image) -> dict:
    return {"image": str(cache.put_image(image).relative_to(cache.root)), "width": image.width,
            "height": image.height}


def render_pdf(data: bytes, name: str, dpi: int, max_pixels: int, cache: StageCache) -> dict:
    """{"pages": [{page, image, width, height} or {page, error}]} or {"error": why the file is unusable}."""
    import pypdfium2 as pdfium

    if not data:
        return {"error": f"{name}: empty file"}
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        return {"error": f"{name}: not a readable PDF ({exc})"}
    pages = []
    try:
        if len(pdf) == 0:
            return {"error": f"{name}: the PDF has no pages"}
        scale = dpi / 72  # PDF sizes are in points, 72 to the inch
        for i in range(len(pdf)):
            try:
                page = pdf[i]
                width, height = (round(side * scale) for side in page.get_size())
                if width * height > max_pixels:
                    pages.append({"page": i + 1, "error": f"{name}#page={i + 1}: {width}x{height} pixels at "
                                                          f"{dpi} dpi is over the {max_pixels:,} limit"})
                    continue
                if width < 1 or height < 1:
                    pages.append({"page": i + 1, "error": f"{name}#page={i + 1}: the page has no area"})
                    continue
                image = page.render(scale=scale).to_pil().convert("RGB")
                page.close()
            except pdfium.PdfiumError as exc:
                pages.append({"page": i + 1, "error": f"{name}#page={i + 1}: cannot render ({exc})"})
                continue
            pages.append({"page": i + 1, **_store(cache, image)})
    finally:
        pdf.close()
    return {"pages": pages}


def read_book(task: tuple[Book, int, int, str]) -> tuple[list[Page], list[tuple[str, str]], int]:
    """One book's pages (runs in a worker): (pages, [(file, reason) skipped], files decoded now)."""
    book, dpi, max_pixels, cache_root = task
    cache = StageCache(Path(cache_root))
    path = Path(book.path)
    pages: list[Page] = []
    skipped: list[tuple[str, str]] = []
    computed = 0
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        for number, file in enumerate(files, 1):
            try:
                data = file.read_bytes()
            except OSError as exc:  # unreadable (permissions, vanished): skipped, never cached
                skipped.append((str(file), f"{file}: cannot read ({exc.strerror or exc})"))
                continue
            key = content_key("image", data, max_pixels)
            entry = cache.get("pages", key)
            if entry is None:
                computed += 1
                try:
                    entry = _store(cache, decode_image(data, str(file), max_pixels))
                except BadImage as exc:
                    entry = {"error": str(exc)}
                cache.put("pages", key, entry)
            if "error" in entry:
                skipped.append((str(file), entry["error"]))
            else:
                pages.append(Page(f"{book.source}/{file.name}", number, entry["image"], entry["width"],
                                  entry["height"]))
        return pages, skipped, computed
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [(str(path), f"{path}: cannot read ({exc.strerror or exc})")], computed
    key = content_key("pdf", data, dpi, max_pixels)
    entry = cache.get("pages", key)
    if entry is None:
        computed += 1
        entry = render_pdf(data, str(path), dpi, max_pixels, cache)
        cache.put("pages", key, entry)
    if "error" in entry:
        return [], [(str(path), entry["error"])], computed
    for p in entry["pages"]:
        if "error" in p:
            skipped.append((f"{path}#page={p['page']}", p["error"]))
        else:
            pages.append(Page(f"{book.source}#page={p['page']}", p["page"], p["image"], p["width"], p["height"]))
    return pages, skipped, computed


# -- dedup -----------------------------------------------------------------------------------------------

def book_hashes(task: tuple[list[str], str]) -> tuple[list[str], int]:
    """pHashes of one book's pages (runs in a worker), cached by image: (hashes, how many computed now)."""
    images, cache_root = task
    cache = StageCache(Path(cache_root))
    out, computed = [], 0
    for rel in images:
        h = cache.get("phash", Path(rel).stem)
        if h is None:
            h = phash(Image.open(cache.root / rel).convert("RGB"))
            cache.put("phash", Path(rel).stem, h)
            computed += 1
        out.append(h)
    return out, computed


# -- the pipeline ----------------------------------------------------------------------------------------

def default_cache_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".cache")


def build_books(source: Path, out: Path, config: BooksConfig, *, overwrite: bool = False,
                progress: bool = True) -> BooksResult:
    """Run every stage over the books in `source` and write the dataset to `out` (all or nothing)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetExists(f"{out}: is a file, not a dataset folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetExists(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    cache = StageCache(Path(config.cache_dir or default_cache_dir(out)).resolve())
    report = Report("books", config={"input": str(source), **asdict(config)})
    computed: dict[str, int] = {}
    clock = time.perf_counter()

    def done(stage: str, left: int) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.count(stage, left, now - clock)
        clock = now

    books = find_books(Path(source), report)
    if not books:
        raise BooksError(f"{source}: no books (PDFs or folders of page images)")
    done("books", len(books))

    read = parallel_map(read_book, [(b, config.dpi, config.max_pixels, str(cache.root)) for b in books],
                        workers=config.workers, desc="pages", unit="book", progress=progress)
    pages: dict[str, list[Page]] = {}
    computed["pages"] = 0
    for book, (book_pages, skipped, n) in zip(books, read, strict=True):
        pages[book.name] = book_pages
        computed["pages"] += n
        for file, reason in skipped:
            report.skip(file, "pages", reason)
    done("pages", _total(pages))

    pages = {b: [p for p in ps if p.width > config.min_side and p.height > config.min_side] for b, ps in pages.items()}
    done("resolution", _total(pages))

    if config.narrative_filter or config.text_removal:
        import torch

        torch.manual_seed(config.seed)
    computed["narrative"] = 0
    if config.narrative_filter:
        from storyloop.data.narrative import score_pages

        images = {p.key: cache.root / p.image for ps in pages.values() for p in ps}
        scores, computed["narrative"] = score_pages(
            images, model=config.narrative_model, kind=config.narrative_kind,
            prompts=(config.narrative_prompt, config.other_prompt), label=config.narrative_label,
            device=config.device, batch_size=config.narrative_batch_size, cache=cache, progress=progress)
        for ps in pages.values():
            for p in ps:
                p.extra["narrative_score"] = round(scores[p.key], 6)
        pages = {b: [p for p in ps if scores[p.key] >= config.narrative_threshold] for b, ps in pages.items()}
    done("narrative", _total(pages))

    computed["text_removal"] = 0
    if config.text_removal:
        from storyloop.data.text_removal import remove_text_pages

        images = {p.key: cache.root / p.image for ps in pages.values() for p in ps}
        cleaned, computed["text_removal"] = remove_text_pages(
            images, detector=config.text_detector, queries=config.text_queries, threshold=config.text_box_threshold,
            grow=config.text_mask_grow, inpainter=config.inpainter, radius=config.inpaint_radius,
            device=config.device, cache=cache, progress=progress)
        for ps in pages.values():
            for p in ps:
                result = cleaned[p.key]
                p.extra["text_boxes"] = len(result["boxes"])
                p.image = result["image"]
        done("text_removal", _total(pages))

    names = [b for b in pages if pages[b]]
    hashes = parallel_map(book_hashes, [([p.image for p in pages[b]], str(cache.root)) for b in names],
                          workers=config.workers, desc="dedup", unit="book", progress=progress)
    computed["dedup"] = sum(n for _, n in hashes)
    for name, (book_hashes_, _) in zip(names, hashes, strict=True):
        keep = keep_distinct(book_hashes_, config.dedup_distance)
        pages[name] = [p for p, k in zip(pages[name], keep, strict=True) if k]
    done("dedup", _total(pages))

    pages = {b: ps for b, ps in pages.items() if len(ps) >= config.min_frames}
    done("min_frames", _total(pages))

    groups = [Group(name, [Frame(cache.root / p.image, source=p.source, extra={"page": p.page, **p.extra})
                           for p in ps]) for name, ps in pages.items()]
    if config.captioner or config.captions_file:
        frames = [f for g in groups for f in g.frames]
        caption_frames(frames, captioner=config.captioner, captions_file=config.captions_file, device=config.device,
                       batch_size=config.caption_batch_size, max_new_tokens=config.caption_max_tokens, cache=cache,
                       report=report, progress=progress)
        done("captions", report.counts["captions"])
    done("groups", len(groups))
    write_dataset(out, groups, report, overwrite=overwrite)
    return BooksResult(out, report, computed)


def _total(pages: dict[str, list[Page]]) -> int:
    return sum(len(ps) for ps in pages.values())
