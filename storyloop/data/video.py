"""Pipeline B (section 3.3): videos -> shots -> filtered frames -> character crops -> identity groups.

Per video, in worker processes: shot boundaries, frames sampled inside each shot, and the content's frame
filters (animation: static frames by pHash; live action: blur and harsh exposure). Then, over all videos in
this process: the zero-shot detector's boxes (live action also drops extreme long shots), crop embeddings,
Louvain clusters, the optional verifier, one group per cluster, captions, and the dataset.

Every costly result is kept in the StageCache by content hash (a video's bytes and the knobs that shape its
frames; a frame and the detector; a crop and the embedder; a crop, its reference and the verifier), so a
rerun decodes and runs models only for what changed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from storyloop.data.cache import StageCache, content_key
from storyloop.data.captions import caption_frames
from storyloop.data.config import VideoConfig
from storyloop.data.dataset import DatasetExists, Frame, Group, NoGroups, write_dataset
from storyloop.data.dedup import keep_changing, phash
from storyloop.data.detect import crop
from storyloop.data.frame_filters import exposure_problem, is_long_shot, sharpness
from storyloop.data.identity import (
    COLOR_HISTOGRAM,
    Embedder,
    cluster,
    make_verifier,
    medoid,
)
from storyloop.data.models import model_identity
from storyloop.data.parallel import parallel_map
from storyloop.data.report import Report
from storyloop.data.shots import BadVideo, detect_shots, read_frames, sample_indices
from storyloop.hashing import sha256_file

FRAMES_VERSION = 1  # bump when shot detection or sampling changes meaning, so cached frames are redone
UNITS = {"videos": "videos", "shots": "shots", "frames": "frames", "static": "frames", "blur": "frames",
         "exposure": "frames", "detections": "crops", "long_shot": "crops", "clustered": "crops",
         "verified": "crops", "images": "images", "groups": "groups", "captions": "images"}


@dataclass
class Job:
    path: str
    name: str  # as the dataset's `source` column names it: relative to IN
    cache_root: str
    config: VideoConfig


def list_inputs(src: Path) -> list[tuple[Path, str]]:
    """Every visible file under `src` (or `src` itself), sorted, with its name relative to `src`."""
    src = Path(src)
    if src.is_file():
        return [(src, src.name)]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = [p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                 for part in p.relative_to(src).parts)]
    return sorted(((p, p.relative_to(src).as_posix()) for p in files), key=lambda t: t[1])


def _shot_threshold(cfg: VideoConfig) -> float:
    return cfg.content_threshold if cfg.shot_detector == "content" else cfg.adaptive_threshold


def sampled_frames(path: Path, cfg: VideoConfig, cache: StageCache) -> dict:
    """{"shots": [[start, end], ...], "frames": [{"digest", "shot", "frame"}, ...]} for one video, cached by
    the video's bytes and the shot and sampling knobs."""
    key = content_key(FRAMES_VERSION, sha256_file(path), cfg.shot_detector, _shot_threshold(cfg),
                      cfg.min_shot_frames, cfg.frames_per_shot)

    def compute() -> dict:
        shots = detect_shots(path, cfg.shot_detector, _shot_threshold(cfg), cfg.min_shot_frames)
        picks = [(s, no) for s, (a, b) in enumerate(shots) for no in sample_indices(a, b, cfg.frames_per_shot)]
        images = read_frames(path, [no for _, no in picks])
        if not images:
            raise BadVideo(f"{path}: no decodable frames")
        frames = [{"digest": cache.put_image(images[no]).stem, "shot": s, "frame": no}
                  for s, no in picks if no in images]
        return {"shots": [list(s) for s in shots], "frames": frames}

    return cache.cached("frames", key, compute)


def filter_frames(frames: list[dict], cfg: VideoConfig, cache: StageCache) -> tuple[list[dict], dict[str, int]]:
    """The content's frame filters, in order; returns the frames kept and the count left after each."""
    counts: dict[str, int] = {}
    images = {f["digest"]: Image.open(cache.image_path(f["digest"])).convert("RGB") for f in frames}
    if cfg.content == "animation":
        keep = keep_changing([phash(images[f["digest"]]) for f in frames], cfg.static_max_distance)
        frames = [f for f, k in zip(frames, keep, strict=True) if k]
        counts["static"] = len(frames)
    else:
        frames = [f for f in frames if sharpness(images[f["digest"]]) >= cfg.blur_min_sharpness]
        counts["blur"] = len(frames)
        frames = [f for f in frames
                  if not exposure_problem(images[f["digest"]], cfg.dark_below, cfg.bright_above, cfg.max_clipped)]
        counts["exposure"] = len(frames)
    return frames, counts


def video_stage(job: Job) -> dict:
    """One video's frames after the frame filters, or the reason it was skipped (never raises for bad input)."""
    cache = StageCache(Path(job.cache_root))
    try:
        sampled = sampled_frames(Path(job.path), job.config, cache)
    except (BadVideo, OSError) as exc:
        return {"name": job.name, "error": str(exc)}
    kept, counts = filter_frames(sampled["frames"], job.config, cache)
    for f in kept:
        f["source"] = f"{job.name}@frame={f['frame']}"
    return {"name": job.name, "shots": len(sampled["shots"]), "frames": len(sampled["frames"]),
            "counts": counts, "kept": kept}


def detect_characters(frames: list[dict], cfg: VideoConfig, cache: StageCache, progress: bool) -> None:
    """Fill frame["boxes"]: [{"box", "score"}], best first; without a detector the whole frame is one box."""
    from tqdm.auto import tqdm

    if not cfg.detector:
        for f in frames:
            with Image.open(cache.image_path(f["digest"])) as im:
                f["boxes"] = [{"box": [0.0, 0.0, float(im.width), float(im.height)], "score": 1.0}]
        return
    identity = content_key(model_identity(cfg.detector), cfg.detector_query, cfg.box_threshold, cfg.text_threshold)
    keys = [content_key(f["digest"], identity) for f in frames]
    todo = [i for i, k in enumerate(keys) if cache.get("detections", k) is None]
    if todo:
        from storyloop.data.detect import Detector

        detector = Detector(cfg.detector, cfg.detector_query, cfg.box_threshold, cfg.text_threshold, cfg.device)
        bar = tqdm(total=len(todo), desc="detections", unit="frame", disable=not progress, leave=False)
        for start in range(0, len(todo), cfg.detection_batch_size):
            batch = todo[start:start + cfg.detection_batch_size]
            images = [Image.open(cache.image_path(frames[i]["digest"])).convert("RGB") for i in batch]
            for i, found in zip(batch, detector(images), strict=True):
                cache.put("detections", keys[i], found)
            bar.update(len(batch))
        bar.close()
    for f, k in zip(frames, keys, strict=True):
        boxes = [d for d in cache.get("detections", k) if min(d["box"][2] - d["box"][0], d["box"][3] - d["box"][1])
                 >= cfg.min_box_pixels]
        f["boxes"] = boxes[:cfg.max_boxes]


def embed_crops(crops: list[dict], cfg: VideoConfig, cache: StageCache):
    """The crops' embeddings (rows, L2-normalised), each cached by crop and embedder."""
    import numpy as np

    identity = COLOR_HISTOGRAM if cfg.embedder == COLOR_HISTOGRAM else model_identity(cfg.embedder)
    keys = [content_key(c["digest"], identity) for c in crops]
    todo = [i for i, k in enumerate(keys) if cache.get("embeddings", k) is None]
    if todo:
        embedder = Embedder(cfg.embedder, cfg.device, cfg.embedding_batch_size)
        for start in range(0, len(todo), 256):  # bounded memory: a chunk of crops open at a time
            batch = todo[start:start + 256]
            vectors = embedder([Image.open(cache.image_path(crops[i]["digest"])).convert("RGB") for i in batch])
            for i, vec in zip(batch, vectors, strict=True):
                cache.put("embeddings", keys[i], [float(v) for v in vec])
    return np.array([cache.get("embeddings", k) for k in keys], dtype=np.float64).reshape(len(crops), -1)


def verify(clusters: list[list[int]], crops: list[dict], embeddings, cfg: VideoConfig,
           cache: StageCache) -> list[list[int]]:
    """Drop the crops the verifier says do not show the character of their cluster's most central crop."""
    from storyloop.data.plugins import identity as plugin_or_model

    identity = content_key(plugin_or_model(cfg.verifier, "verified"), cfg.verifier_prompt)
    verifier = None
    out = []
    for members in clusters:
        ref = medoid(embeddings, members)
        kept = []
        for i in members:
            if i == ref:
                kept.append(i)
                continue
            key = content_key(crops[i]["digest"], crops[ref]["digest"], identity)
            answer = cache.get("verified", key)
            if answer is None:
                if verifier is None:
                    verifier = make_verifier(cfg.verifier, cfg.verifier_prompt, cfg.device)
                with Image.open(cache.image_path(crops[i]["digest"])) as a, \
                        Image.open(cache.image_path(crops[ref]["digest"])) as b:
                    answer = bool(verifier(a.convert("RGB"), b.convert("RGB")))
                cache.put("verified", key, answer)
            if answer:
                kept.append(i)
        out.append(kept)
    return out


def build_video_dataset(src: Path, out: Path, cfg: VideoConfig, overwrite: bool = False,
                        progress: bool = True) -> Report:
    """Run the pipeline on the videos under `src` and write the dataset to `out` (all or nothing)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:  # before any work, not after it
        raise DatasetExists(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    cache = StageCache(Path(cfg.cache_dir) if cfg.cache_dir else out.with_name(out.name + ".cache"))
    report = Report("video", config=asdict(cfg))
    inputs = list_inputs(src)
    if not inputs:
        raise FileNotFoundError(f"{src}: no files to read")

    t0 = time.perf_counter()
    jobs = [Job(str(p), name, str(cache.root), cfg) for p, name in inputs]
    results = parallel_map(video_stage, jobs, workers=cfg.workers, desc="videos", unit="video", progress=progress)
    good = []
    for r in results:
        if "error" in r:
            report.skip(r["name"], "videos", r["error"])
        else:
            good.append(r)
    seconds = time.perf_counter() - t0
    report.count("videos", len(good), seconds)
    report.count("shots", sum(r["shots"] for r in good))
    report.count("frames", sum(r["frames"] for r in good))
    for stage in ("static",) if cfg.content == "animation" else ("blur", "exposure"):
        report.count(stage, sum(r["counts"][stage] for r in good))
    frames = [f for r in good for f in r["kept"]]

    t0 = time.perf_counter()
    detect_characters(frames, cfg, cache, progress)
    report.count("detections", sum(len(f["boxes"]) for f in frames), time.perf_counter() - t0)
    if cfg.content == "live-action":
        sizes = {f["digest"]: Image.open(cache.image_path(f["digest"])).size for f in frames}
        frames = [f for f in frames if not is_long_shot([b["box"] for b in f["boxes"]], *sizes[f["digest"]],
                                                        cfg.long_shot_min_area)]
        report.count("long_shot", sum(len(f["boxes"]) for f in frames))

    crops = []
    for f in frames:
        with Image.open(cache.image_path(f["digest"])) as im:
            im = im.convert("RGB")
            for b in f["boxes"]:
                crops.append({"frame": f, "box": b["box"], "score": b["score"],
                              "digest": cache.put_image(crop(im, b["box"])).stem})

    t0 = time.perf_counter()
    clusters = []
    if crops:
        embeddings = embed_crops(crops, cfg, cache)
        clusters = cluster(embeddings, cfg.similarity_threshold, cfg.min_cluster_size, cfg.seed,
                           cfg.louvain_resolution)
    report.count("clustered", sum(map(len, clusters)), time.perf_counter() - t0)
    if cfg.verifier and clusters:
        t0 = time.perf_counter()
        clusters = [c for c in verify(clusters, crops, embeddings, cfg, cache) if len(c) >= cfg.min_cluster_size]
        report.count("verified", sum(map(len, clusters)), time.perf_counter() - t0)

    groups = []
    for members in clusters:
        chosen: dict[str, int] = {}  # one image per frame in a group: its best-scoring crop
        for i in members:
            best = chosen.get(crops[i]["frame"]["digest"])
            if best is None or crops[i]["score"] > crops[best]["score"]:
                chosen[crops[i]["frame"]["digest"]] = i
        picked = [crops[i] for i in sorted(chosen.values())]  # in video and frame order
        if len(picked) < cfg.min_cluster_size:
            continue
        name = f"character-{len(groups):03d}"
        groups.append(Group(name, [Frame(cache.image_path(c["frame"]["digest"] if cfg.image == "frame"
                                                        else c["digest"]),
                                         source=c["frame"]["source"],
                                         extra={"box": c["box"], "score": c["score"], "shot": c["frame"]["shot"]})
                                   for c in picked]))
    report.count("images", sum(len(g.frames) for g in groups))
    report.count("groups", len(groups))
    if not groups:
        raise NoGroups(report)

    if cfg.captioner or cfg.captions_file:  # no captions, no `captions` row
        t0 = time.perf_counter()
        all_frames = [f for g in groups for f in g.frames]
        caption_frames(all_frames, captioner=cfg.captioner, captions_file=cfg.captions_file, device=cfg.device,
                       batch_size=cfg.caption_batch_size, max_new_tokens=cfg.caption_max_tokens, cache=cache,
                       report=report, progress=progress)
        report.seconds["captions"] = round(time.perf_counter() - t0, 3)
    write_dataset(out, groups, report, overwrite=overwrite)
    return report
