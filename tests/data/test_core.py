"""The data pipelines' shared core: safe decoding, the stage cache, the report, atomic datasets, dedup, captions."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from storyloop.data.cache import StageCache, content_key, png_bytes
from storyloop.data.captions import caption_frames, read_captions_file
from storyloop.data.dataset import DatasetExists, Frame, Group, write_dataset
from storyloop.data.dedup import keep_changing, keep_distinct, phash
from storyloop.data.images import BadImage, decode_image, open_image
from storyloop.data.models import DataModelError
from storyloop.data.parallel import parallel_map
from storyloop.data.report import Report
from tests.conftest import png_claiming_size
from tests.data.tiny_models import tiny_blip


def _png(size=(8, 6), color=(10, 200, 30)) -> bytes:
    return png_bytes(Image.new("RGB", size, color))


@pytest.mark.parametrize("name,data,why", [
    ("empty.png", b"", "empty file"),
    ("notes.png", b"these are not pixels", "not an image"),
    ("cut.png", _png((64, 64))[:60], "not a readable image"),
    ("bomb.png", png_claiming_size(40_000, 40_000), "decompression bomb"),
], ids=["empty", "not-an-image", "truncated", "bomb"])
def test_bad_images_are_named_errors(tmp_path, name, data, why):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImage, match=why) as info:
        open_image(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_bad_image(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        open_image(tmp_path / "nope.png")


def test_good_image_decodes_to_rgb():
    img = decode_image(png_bytes(Image.new("L", (5, 3), 7)), "grey.png")
    assert img.mode == "RGB" and img.size == (5, 3)


def test_stage_cache_computes_once_and_stores_images_by_content(tmp_path):
    cache = StageCache(tmp_path)
    calls = []
    key = content_key(b"page bytes", {"dpi": 150})
    assert cache.cached("pages", key, lambda: calls.append(1) or [1, 2]) == [1, 2]
    assert StageCache(tmp_path).cached("pages", key, lambda: calls.append(1) or [9]) == [1, 2]
    assert calls == [1]
    assert content_key(b"page bytes", {"dpi": 150}) != content_key(b"page bytes", {"dpi": 300})
    a = cache.put_image(Image.new("RGB", (4, 4), (1, 2, 3)))
    b = cache.put_image(Image.new("RGB", (4, 4), (1, 2, 3)))
    assert a == b and len(list((tmp_path / "images").rglob("*.png"))) == 1


def _frames(tmp_path: Path, n: int) -> list[Frame]:
    cache = StageCache(tmp_path / "cache")
    return [Frame(cache.put_image(Image.new("RGB", (6, 6), (40 * i, 0, 0))), f"frame {i}", f"book.pdf#page={i}")
            for i in range(n)]


def test_dataset_round_trip_reads_as_stage1_metadata(tmp_path):
    from storyloop.generation.stage1 import read_metadata

    frames = _frames(tmp_path, 3)
    report = Report("books", counts={"pages": 3, "groups": 2})
    out = write_dataset(tmp_path / "ds", [Group("Fox & Owl", frames[:2]), Group("Fox & Owl!", frames[2:])], report)
    rows = read_metadata(out)
    assert [(r["group"], r["caption"]) for r in rows] == [("Fox & Owl", "frame 0"), ("Fox & Owl", "frame 1"),
                                                          ("Fox & Owl!", "frame 2")]
    assert len({Path(r["image"]).parent for r in rows}) == 2  # two groups with the same slug keep apart
    assert json.loads((out / "report.json").read_text())["counts"] == {"pages": 3, "groups": 2}
    for row, frame in zip(rows, frames, strict=True):
        assert (out / row["image"]).read_bytes() == frame.image.read_bytes()


def test_dataset_is_all_or_nothing(tmp_path):
    frames = _frames(tmp_path, 2)
    frames[1].image.unlink()
    with pytest.raises(FileNotFoundError):
        write_dataset(tmp_path / "ds", [Group("g", frames)], Report("books"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no dataset, no partial folder


def test_dataset_refuses_to_overwrite_unless_asked(tmp_path):
    frames = _frames(tmp_path, 1)
    out = write_dataset(tmp_path / "ds", [Group("a", frames)], Report("books"))
    with pytest.raises(DatasetExists, match="--overwrite"):
        write_dataset(out, [Group("b", frames)], Report("books"))
    write_dataset(out, [Group("b", frames)], Report("books"), overwrite=True)
    assert json.loads((out / "metadata.jsonl").read_text().splitlines()[0])["group"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]


def test_dedup_keeps_the_first_of_near_duplicates():
    def img(shift):  # a gradient, shifted: nearly the same picture
        im = Image.new("L", (64, 64))
        im.putdata([min(255, (x + shift) * 4) for y in range(64) for x in range(64)])
        return im.convert("RGB")

    other = Image.new("RGB", (64, 64))
    other.putdata([((x * y) % 256, 0, 0) for y in range(64) for x in range(64)])
    hashes = [phash(img(0)), phash(img(1)), phash(other), phash(img(0))]
    assert keep_distinct(hashes, max_distance=4) == [True, False, True, False]
    assert keep_changing(hashes, max_distance=4) == [True, False, True, True]  # a scene that returns stays
    assert keep_distinct(hashes, max_distance=-1) == [True] * 4


def test_parallel_map_keeps_input_order():
    items = list(range(-5, 5))
    assert parallel_map(abs, items, workers=2, progress=False) == [abs(i) for i in items]
    assert parallel_map(abs, items, workers=1, progress=False) == [abs(i) for i in items]


def test_report_counts_keep_stage_order_and_skips(tmp_path):
    report = Report("books")
    for stage, left in (("pages", 10), ("resolution", 8), ("groups", 2)):
        report.count(stage, left, seconds=0.5)
    report.skip("bad.pdf", "pages", "not a PDF")
    data = json.loads(report.to_json())
    assert list(data["counts"]) == ["pages", "resolution", "groups"]
    assert data["skipped_files"] == 1 and data["skipped"][0]["file"] == "bad.pdf"
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100)
    console.print(report.table())
    assert "resolution" in console.file.getvalue() and "1 input(s) skipped" in console.file.getvalue()


def test_captions_file_formats_and_errors(tmp_path):
    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text('{"key": "a.pdf#page=1", "caption": "Mia runs"}\n\n{"key": "abc", "caption": "Tom"}\n')
    assert read_captions_file(jsonl) == {"a.pdf#page=1": "Mia runs", "abc": "Tom"}
    obj = tmp_path / "caps.json"
    obj.write_text(json.dumps({"k": "v"}))
    assert read_captions_file(obj) == {"k": "v"}
    jsonl.write_text('{"key": "a", "caption": "ok"}\n{"key": "b"}\n')
    with pytest.raises(DataModelError, match="caps.jsonl: line 2"):
        read_captions_file(jsonl)


def test_caption_frames_from_file_needs_every_frame(tmp_path):
    frames = _frames(tmp_path, 2)
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"key": frames[0].source, "caption": "by source"}) + "\n"
                    + json.dumps({"key": frames[1].key, "caption": "by hash"}) + "\n")
    report = Report("books")
    caption_frames(frames, captions_file=str(caps), cache=StageCache(tmp_path / "cache"), report=report)
    assert [f.caption for f in frames] == ["by source", "by hash"] and report.counts["captions"] == 2
    caps.write_text(json.dumps({"key": frames[0].source, "caption": "only one"}) + "\n")
    with pytest.raises(DataModelError, match="no caption for 1 image"):
        caption_frames(frames, captions_file=str(caps), cache=StageCache(tmp_path / "cache"), report=report)


def test_caption_frames_with_a_model_caches_per_image(tmp_path):
    model = tiny_blip(tmp_path / "blip")
    frames = _frames(tmp_path, 3)
    cache = StageCache(tmp_path / "cache")
    report = Report("books")
    caption_frames(frames, captioner=str(model), cache=cache, report=report, max_new_tokens=5, progress=False)
    first = [f.caption for f in frames]
    assert all(isinstance(c, str) for c in first)
    # Done work is not redone: a rerun on a device that does not exist still captions every frame, from
    # the cache (loading the model would fail on that device).
    again = _frames(tmp_path, 3)
    caption_frames(again, captioner=str(model), cache=cache, report=report, device="nosuchdevice", max_new_tokens=5,
                   progress=False)
    assert [f.caption for f in again] == first
    with pytest.raises(RuntimeError):
        caption_frames(_frames(tmp_path, 4), captioner=str(model), cache=cache, report=report,
                       device="nosuchdevice", max_new_tokens=5, progress=False)
    # Another model is another identity: its captions are made anew.
    shutil.rmtree(model)
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(DataModelError, match="captions: cannot load model"):
        caption_frames(_frames(tmp_path, 3), captioner=str(model), cache=cache, report=report, progress=False)
