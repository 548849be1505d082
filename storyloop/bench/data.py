"""`storyloop bench data`: throughput of the data pipelines' cheap stages at real page and frame sizes.

Synthetic inputs made here: picture books as PDFs of A5 pages drawn at 150 dpi (874x1240 px, shapes on a
coloured ground, a duplicate page in each book), and 720p videos (MJPG) of shots that cut every few seconds.
Each pipeline runs twice on the same inputs and cache: cold (all work done) and warm (everything cached).
The model stages are off: their cost is the model's, and no weights can be downloaded here.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

A5_150DPI = (874, 1240)
VIDEO_SIZE = (1280, 720)
FPS = 24


def _page(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    page = Image.new("RGB", size, tuple(rng.randrange(120, 250) for _ in range(3)))
    draw = ImageDraw.Draw(page)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(40, size[0] // 2), rng.randrange(40, size[1] // 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + w, y + h], fill=tuple(rng.randrange(256) for _ in range(3)))
    return page


def write_books(folder: Path, books: int, pages: int, seed: int = 0) -> int:
    """`books` PDFs of `pages` pages each (the last repeats the first, for dedup); returns the page count."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(books):
        images = [_page(rng, A5_150DPI) for _ in range(pages - 1)]
        images.append(images[0].copy())
        images[0].save(folder / f"book-{b:03d}.pdf", "PDF", resolution=150, save_all=True, append_images=images[1:])
    return books * pages


def write_videos(folder: Path, videos: int, seconds: int, shot_seconds: int = 3, seed: int = 0) -> int:
    """`videos` 720p MJPG clips of `seconds` each, a cut every `shot_seconds` between three recurring scenes;
    returns the frame count."""
    import cv2
    import numpy as np

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        writer = cv2.VideoWriter(str(folder / f"clip-{v:02d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS,
                                 VIDEO_SIZE)
        # three scenes that come back in turn, so every scene's frames form a cluster
        scenes = [np.asarray(_page(rng, (VIDEO_SIZE[0] + 64, VIDEO_SIZE[1])))[:, :, ::-1] for _ in range(3)]
        for shot in range(seconds // shot_seconds):
            still = scenes[shot % 3]
            for t in range(shot_seconds * FPS):  # a slow pan, on from where the scene was last left
                x = (shot // 3 * shot_seconds * FPS + t) // 2 % 64
                writer.write(np.ascontiguousarray(still[:, x:x + VIDEO_SIZE[0]]))
        writer.release()
    return videos * (seconds // shot_seconds) * shot_seconds * FPS


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_data_bench(books: int = 8, pages: int = 12, videos: int = 2, seconds: int = 30, workers: int = 2,
                   log: Callable[[str], None] = print) -> dict:
    from storyloop.data.books import build_books
    from storyloop.data.config import BooksConfig, VideoConfig
    from storyloop.data.video import build_video_dataset

    root = Path(tempfile.mkdtemp(prefix="storyloop-bench-data-"))
    try:
        log(f"writing {books} books of {pages} A5 pages at 150 dpi and {videos} 720p clips of {seconds} s")
        n_pages = write_books(root / "books", books, pages)
        n_frames = write_videos(root / "videos", videos, seconds)
        result: dict = {"books": books, "pages": n_pages, "page_px": list(A5_150DPI), "videos": videos,
                        "video_frames": n_frames, "video_px": list(VIDEO_SIZE), "workers": workers}
        book_cfg = BooksConfig(workers=workers, narrative_filter=False, captioner="", min_frames=2,
                               cache_dir=str(root / "books-cache"))
        runs = {}
        for name in ("cold", "warm"):
            out = root / f"books-{name}"
            runs[name] = _timed(lambda: build_books(root / "books", out, book_cfg, progress=False))
        report = json.loads((root / "books-cold" / "report.json").read_text())
        result["books_cold_s"], result["books_warm_s"] = round(runs["cold"], 2), round(runs["warm"], 2)
        result["books_pages_per_s"] = round(n_pages / runs["cold"], 1)
        result["books_counts"] = report["counts"]
        log(f"books: {n_pages} pages in {runs['cold']:.1f} s cold, {runs['warm']:.1f} s warm")

        # live action (animation's static filter would take a slow pan for still frames); flat synthetic
        # shapes are not motion blur
        video_cfg = VideoConfig(workers=workers, content="live-action", detector="", embedder="color-histogram",
                                captioner="", blur_min_sharpness=0.0, similarity_threshold=0.8,
                                cache_dir=str(root / "video-cache"))
        for name in ("cold", "warm"):
            out = root / f"video-{name}"
            runs[name] = _timed(lambda: build_video_dataset(root / "videos", out, video_cfg, progress=False))
        report = json.loads((root / "video-cold" / "report.json").read_text())
        result["video_cold_s"], result["video_warm_s"] = round(runs["cold"], 2), round(runs["warm"], 2)
        result["video_frames_per_s"] = round(n_frames / runs["cold"], 1)
        result["video_realtime_factor"] = round(n_frames / FPS / runs["cold"], 1)
        result["video_counts"] = report["counts"]
        log(f"video: {n_frames} frames in {runs['cold']:.1f} s cold, {runs['warm']:.1f} s warm")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
