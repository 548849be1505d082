"""`storyloop data video`: planted shots are found, frames filtered, toy characters clustered one per group,
reruns do no work, bad inputs are skipped by name, and the output trains Stage-1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.data.cache import StageCache
from storyloop.data.config import VideoConfig
from storyloop.data.dataset import NoGroups
from storyloop.data.detect import Detector
from storyloop.data.frame_filters import exposure_problem, is_long_shot
from storyloop.data.identity import Embedder, cluster, color_histogram, medoid
from storyloop.data.plugins import load_plugin
from storyloop.data.shots import BadVideo, detect_shots, sample_indices
from storyloop.data.video import build_video_dataset, filter_frames, verify
from tests.data.toy_videos import CHARACTERS, close_up, write_video

DAY = ("day", "grass")
# Each video: (character, scene) shots with their lengths in frames (all over min_shot_frames=15).
PLAN = {"a.avi": ([("red", DAY), ("blue", DAY), ("green", DAY), ("red", DAY)], [20, 30, 26, 24], 1),
        "sub/b.avi": ([("green", DAY), ("blue", DAY), ("red", DAY), ("blue", DAY), ("green", DAY)],
                      [22, 18, 28, 25, 19], 2)}
FAST = dict(embedder="color-histogram", detector="", captioner="", similarity_threshold=0.8, min_cluster_size=3,
            workers=1)


def write_planted(folder: Path) -> dict[str, list[tuple[int, int, str]]]:
    """The videos of PLAN under `folder`; returns per video its shots as (start, end, character)."""
    truth = {}
    for name, (shots, lengths, pan) in PLAN.items():
        bounds = write_video(folder / name, shots, lengths, pan)
        truth[name] = [(start, end, character) for (start, end), (character, _) in zip(bounds, shots, strict=True)]
    return truth


def character_of(truth: dict, source: str) -> str:
    name, frame = re.fullmatch(r"(.+)@frame=(\d+)", source).groups()
    return next(c for a, b, c in truth[name] if a <= int(frame) < b)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def dataset_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "report.json"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return folder, write_planted(folder)


def test_shot_detection_finds_exactly_the_planted_cuts(tmp_path):
    bounds = write_video(tmp_path / "v.avi", [("red", DAY), ("blue", DAY), ("green", DAY)], length=20)
    assert detect_shots(tmp_path / "v.avi") == bounds == [(0, 20), (20, 40), (40, 60)]
    assert detect_shots(tmp_path / "v.avi", "adaptive", 3.0) == bounds
    # a threshold no cut reaches: the whole video is one shot
    assert detect_shots(tmp_path / "v.avi", "content", 255.0) == [(0, 60)]


def test_frames_are_sampled_evenly_inside_each_shot():
    assert sample_indices(0, 24, 3) == [4, 12, 20]
    assert sample_indices(100, 130, 2) == [107, 122]
    assert sample_indices(10, 12, 5) == [10, 11]  # a shot shorter than the sample: each frame once
    assert sample_indices(5, 5, 3) == []


def test_toy_characters_come_out_one_cluster_each(planted, tmp_path):
    folder, truth = planted
    cfg = VideoConfig(**{**FAST, "workers": 2, "verifier": "tests.data.verifiers:same_dominant_hue"})
    report = build_video_dataset(folder, tmp_path / "out", cfg, progress=False)
    assert report.counts == {"videos": 2, "shots": 9, "frames": 27, "static": 27, "detections": 27,
                             "clustered": 27, "verified": 27, "images": 27, "groups": 3}
    by_group: dict[str, set[str]] = {}
    for row in rows(tmp_path / "out"):
        by_group.setdefault(row["group"], set()).add(character_of(truth, row["source"]))
        assert row["box"] == [0.0, 0.0, 128.0, 128.0]  # no detector: the whole frame
    assert sorted(by_group.values(), key=sorted) == [{"blue"}, {"green"}, {"red"}]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"] == report.counts


def test_a_rerun_decodes_nothing_and_writes_the_identical_dataset(planted, tmp_path, monkeypatch):
    folder, _ = planted
    cfg = VideoConfig(**FAST)
    build_video_dataset(folder, tmp_path / "out", cfg, progress=False)
    first = dataset_files(tmp_path / "out")

    def no_work(*args, **kwargs):
        raise AssertionError("a cached stage ran again")

    for name in ("detect_shots", "read_frames", "Embedder"):
        monkeypatch.setattr(f"storyloop.data.video.{name}", no_work)
    build_video_dataset(folder, tmp_path / "out", cfg, overwrite=True, progress=False)
    assert dataset_files(tmp_path / "out") == first
    # a changed knob of the frame stage is new work
    with pytest.raises(AssertionError, match="cached stage"):
        build_video_dataset(folder, tmp_path / "out", VideoConfig(**{**FAST, "frames_per_shot": 4}),
                            overwrite=True, progress=False)
    assert dataset_files(tmp_path / "out") == first  # the failed run left the old dataset whole


def _frames_in_cache(cache: StageCache, images: list[Image.Image]) -> list[dict]:
    return [{"digest": cache.put_image(im).stem, "shot": 0, "frame": i} for i, im in enumerate(images)]


def test_live_action_filters_drop_blur_and_harsh_exposure(tmp_path):
    rng = np.random.default_rng(0)
    texture = np.asarray(close_up("red", *DAY), dtype=np.float64) + rng.normal(0, 25, (128, 128, 3))
    sharp = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))
    blurred = sharp.filter(ImageFilter.GaussianBlur(4))
    black = Image.new("RGB", (128, 128), (3, 3, 3))
    glare = Image.fromarray(np.clip(texture * 0.3 + 190 + rng.normal(0, 25, texture.shape), 0, 255).astype(np.uint8))
    half_clipped = np.asarray(sharp).copy()
    half_clipped[:, :64] = 255
    cache = StageCache(tmp_path)
    frames = _frames_in_cache(cache, [sharp, blurred, black, glare, Image.fromarray(half_clipped)])
    kept, counts = filter_frames(frames, VideoConfig(content="live-action"), cache)
    assert [f["frame"] for f in kept] == [0]
    assert counts == {"blur": 3, "exposure": 1}  # blur removed the blurred and the flat black frame
    assert [exposure_problem(im, 40, 215, 0.3) for im in (sharp, glare, Image.fromarray(half_clipped))] == \
        ["", "too bright", "clipped"]


def test_animation_drops_a_static_run_but_keeps_a_return(tmp_path):
    a, b = close_up("red", *DAY), close_up("blue", *DAY)
    a_jpeg = Image.open(_jpeg(a))  # a static frame re-encoded: not byte-equal, still the same picture
    cache = StageCache(tmp_path)
    kept, counts = filter_frames(_frames_in_cache(cache, [a, a_jpeg, a, b, b, a]), VideoConfig(), cache)
    assert [f["frame"] for f in kept] == [0, 3, 5]
    assert counts == {"static": 3}


def _jpeg(image: Image.Image):
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    buf.seek(0)
    return buf


def test_long_shots_are_frames_whose_largest_box_is_a_speck():
    assert is_long_shot([[0, 0, 10, 10], [0, 0, 20, 20]], 128, 128, 0.05)  # 400 px < 0.05 * 16384
    assert not is_long_shot([[0, 0, 10, 10], [0, 0, 20, 20]], 128, 128, 0.02)  # 400 px >= 0.02 * 16384
    assert is_long_shot([], 128, 128, 0.0)


def test_the_verifier_drops_the_crop_unlike_the_clusters_centre(tmp_path):
    cache = StageCache(tmp_path)
    images = [close_up("red", *DAY).rotate(r) for r in (0, 5, 10)] + [close_up("blue", *DAY)]
    crops = [{"digest": cache.put_image(im).stem} for im in images]
    emb = np.stack([color_histogram(im) for im in images])
    assert cluster(emb, 0.3, 2, seed=0) == [[0, 1, 2, 3]]  # a loose threshold lets the blue one in
    cfg = VideoConfig(verifier="tests.data.verifiers:same_dominant_hue")
    assert verify([[0, 1, 2, 3]], crops, emb, cfg, cache) == [[0, 1, 2]]
    # answers are cached by crop, reference and verifier: a verifier that would now say no is not asked
    assert verify([[0, 1, 2, 3]], crops, emb, cfg, cache) == [[0, 1, 2]]
    never = VideoConfig(verifier="tests.data.verifiers:never")
    centre = medoid(emb, [0, 1, 2, 3])
    assert centre in (0, 1, 2)  # a red one
    assert verify([[0, 1, 2, 3]], crops, emb, never, cache) == [[centre]]  # only the centre stays
    assert load_plugin("tests.data.verifiers:never", "verified")(images[0], images[0]) is False


def test_clustering_is_deterministic_for_a_seed_and_drops_small_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    points = np.concatenate([c + 0.05 * rng.normal(size=(n, 8)) for c, n in zip(centres, (5, 4, 2), strict=True)])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert cluster(points, 0.9, 3, seed=1) == [[0, 1, 2, 3, 4], [5, 6, 7, 8]] == cluster(points, 0.9, 3, seed=1)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.data.tiny_models import tiny_dinov2, tiny_grounding_dino, tiny_owlvit

    root = tmp_path_factory.mktemp("models")
    return (tiny_owlvit(root / "owlvit"), tiny_dinov2(root / "dinov2"),
            tiny_grounding_dino(root / "gdino"))


@pytest.mark.parametrize("which", [0, 2], ids=["owlvit", "grounding-dino"])
def test_zero_shot_detectors_give_boxes_inside_the_frame_best_first(tiny_models, which):
    images = [close_up("red", *DAY), close_up("blue", *DAY).resize((96, 128))]
    detector = Detector(str(tiny_models[which]), "a character. a person.", 0.0, 0.0, device="cpu")
    found = detector(images)
    assert len(found) == 2 and all(found)
    for image, boxes in zip(images, found, strict=True):
        assert [b["score"] for b in boxes] == sorted((b["score"] for b in boxes), reverse=True)
        for b in boxes:
            x0, y0, x1, y1 = b["box"]
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    assert found == detector(images)  # deterministic
    assert not any(detector.__class__(str(tiny_models[which]), "a character.", 1.0, 1.0, "cpu")(images))


def test_dinov2_embeddings_are_unit_length_and_deterministic(tiny_models):
    _, dino, _ = tiny_models
    images = [close_up(c, *DAY) for c in CHARACTERS]
    first = Embedder(str(dino), device="cpu")(images)
    assert first.shape == (3, 32)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    assert np.array_equal(first, Embedder(str(dino), device="cpu", batch_size=2)(images))


def test_the_cli_runs_the_detector_and_dinov2_and_writes_crops_with_their_boxes(planted, tiny_models, tmp_path):
    folder, truth = planted
    owl, dino, _ = tiny_models
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "data", "video", str(folder / "a.avi"), "--out", str(out), "--embedder", str(dino), "--no-captions",
        "--json", "--set", f"detector={owl}", "--set", "box_threshold=0.0", "--set", "max_boxes=2",
        "--set", "min_box_pixels=1",
        "--set", "content=live-action", "--set", "blur_min_sharpness=1", "--set", "image=crop",
        "--set", "similarity_threshold=-1", "--set", "min_cluster_size=2", "--set", "device=cpu",
        "--set", "workers=1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    counts = report["counts"]
    assert list(counts) == ["videos", "shots", "frames", "blur", "exposure", "detections", "long_shot",
                            "clustered", "images", "groups"]
    assert (counts["videos"], counts["shots"], counts["frames"], counts["exposure"]) == (1, 4, 12, 12)
    assert 0 < counts["long_shot"] <= counts["detections"] <= 2 * counts["exposure"]  # max_boxes=2 per frame
    cache = tmp_path / "out.cache"
    assert len(list((cache / "detections").rglob("*.json"))) == counts["exposure"]  # the detector saw each frame
    assert 0 < len(list((cache / "embeddings").rglob("*.json"))) <= counts["long_shot"]  # DINOv2 each crop
    got = rows(out)
    assert len(got) == counts["images"] > 0
    for row in got:
        x0, y0, x1, y1 = row["box"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        with Image.open(out / row["image"]) as im:  # a crop is exactly its box
            assert im.size == (round(x1) - round(x0), round(y1) - round(y0))


def test_bad_inputs_are_skipped_by_name_and_counted(planted, tmp_path):
    folder, _ = planted
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.avi").write_bytes((folder / "a.avi").read_bytes())
    (src / "empty.mp4").write_bytes(b"")
    (src / "noise.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "notes.txt").write_text("not a video")
    truncated = (folder / "sub" / "b.avi").read_bytes()
    (src / "cut.avi").write_bytes(truncated[:200])  # the header only
    result = CliRunner().invoke(app, ["data", "video", str(src), "--out", str(tmp_path / "out"), "--json",
                                      "--no-detector", "--embedder", "color-histogram", "--no-captions",
                                      "--set", "similarity_threshold=0.8", "--set", "min_cluster_size=2",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["counts"]["videos"] == 1 and report["counts"]["groups"] == 3
    assert sorted(s["file"] for s in report["skipped"]) == ["cut.avi", "empty.mp4", "noise.avi", "notes.txt"]
    assert report["skipped_files"] == 4
    assert "empty file" in next(s["reason"] for s in report["skipped"] if s["file"] == "empty.mp4")


def test_nothing_usable_is_an_error_and_writes_no_dataset(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "video", str(src), "--out", str(out), "--no-detector",
                                      "--embedder", "color-histogram", "--no-captions"])
    assert result.exit_code == 1
    assert "no groups: nothing left after the 'videos' stage" in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    with pytest.raises(NoGroups):
        build_video_dataset(src, out, VideoConfig(**FAST), progress=False)
    with pytest.raises(BadVideo, match="empty file"):
        detect_shots(src / "empty.mp4")


def test_user_mistakes_are_one_line_errors(planted, tmp_path):
    folder, _ = planted
    runner = CliRunner()
    base = ["data", "video", str(folder), "--no-detector", "--embedder", "color-histogram", "--no-captions"]
    missing = runner.invoke(app, ["data", "video", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
    bad_knob = runner.invoke(app, [*base, "--out", str(tmp_path / "o"), "--set", "content=cartoon"])
    assert bad_knob.exit_code == 1 and "content must be one of animation, live-action" in bad_knob.output
    unknown = runner.invoke(app, [*base, "--out", str(tmp_path / "o"), "--set", "frames=3"])
    assert unknown.exit_code == 1 and "unknown key(s) frames" in unknown.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    exists = runner.invoke(app, [*base, "--out", str(tmp_path / "full")])
    assert exists.exit_code == 1 and "--overwrite" in exists.output
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    no_model = runner.invoke(app, ["data", "video", str(folder), "--out", str(tmp_path / "o"), "--no-captions",
                                   "--set", f"detector={tmp_path / 'no-model'}", "--set", "workers=1"])
    assert no_model.exit_code == 1 and "no such model folder" in no_model.output
    assert "Traceback" not in no_model.output


def test_the_dataset_trains_stage1_for_a_step(planted, tmp_path):
    from storyloop.generation.config import Stage1Config
    from storyloop.generation.stage1 import train_stage1
    from storyloop.generation.tiny import tiny_flux_pipeline

    folder, truth = planted
    captions = tmp_path / "captions.jsonl"
    sources = [f"{name}@frame={f}" for name, shots in truth.items() for a, b, _ in shots
               for f in sample_indices(a, b, 3)]
    captions.write_text("".join(json.dumps({"key": s, "caption": f"a {character_of(truth, s)} character"}) + "\n"
                                for s in sources))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "video", str(folder), "--out", str(out), "--no-detector",
                                      "--embedder", "color-histogram", "--captions", str(captions),
                                      "--set", "similarity_threshold=0.8", "--set", "min_cluster_size=3",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    got = rows(out)
    assert all(row["caption"] == f"a {character_of(truth, row['source'])} character" for row in got)
    assert json.loads((out / "report.json").read_text())["counts"]["captions"] == len(got)
    words = "a red blue green character".split()
    tiny_flux_pipeline(words).save_pretrained(tmp_path / "flux")
    cfg = Stage1Config(model=str(tmp_path / "flux"), dataset=str(out), output_dir=str(tmp_path / "train"), rank=4,
                       lora_alpha=4, resolution=32, max_sequence_length=16, max_train_steps=1,
                       checkpointing_steps=1, report_to="none", learning_rate=1e-3)
    lora = train_stage1(cfg, progress=False)
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
