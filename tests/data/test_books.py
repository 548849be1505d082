"""`storyloop data books`: toy picture books with planted covers, duplicates, small pages, a short book and
bad files go through every stage with exact counts; the model stages run tiny random models of the real
classes; a rerun does no work; the dataset trains Stage-1."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.data import books as books_mod
from storyloop.data.books import Book, read_book
from storyloop.data.cache import StageCache
from storyloop.data.dedup import distance, phash
from storyloop.data.text_removal import make_inpainter, remove_text, remove_text_pages
from storyloop.toy.render import render
from storyloop.toy.world import all_characters, random_frame
from tests.data.tiny_models import (
    tiny_blip,
    tiny_clip,
    tiny_narrative_classifier,
    tiny_owlvit,
)

PAGE, MIN_SIDE = 96, 64  # pages are 96 px; the resolution filter is lowered from 512 to 64 to keep tests fast
CHEAP = ["--no-narrative-filter", "--no-captions", "--set", f"min_side={MIN_SIDE}", "--set", "dpi=72",
         "--workers", "1"]
# books 5 (fox, owl, cat, bad, broken.pdf); pages: fox 8, owl 6, cat 4, bad 4 good of 8 (+ broken.pdf, README)
CAPTIONED = [a for a in CHEAP if a != "--no-captions"]  # for a captions file or model
CHEAP_COUNTS = {"books": 5, "pages": 22, "resolution": 20, "narrative": 20, "dedup": 18, "min_frames": 15,
                "groups": 3}
BOX = (20, 30, 50, 52)  # the box the plugin detector finds


def one_box(image):
    """A text detector plugin: one known box on every page."""
    return [BOX]


def cover(i: int) -> Image.Image:
    """A title page: a plain colour, a white title block and lines of 'text'."""
    img = Image.new("RGB", (PAGE, PAGE), [(180, 40, 90), (30, 110, 160), (200, 150, 30)][i % 3])
    d = ImageDraw.Draw(img)
    d.rectangle([12, 14, PAGE - 12, 40], fill=(250, 250, 250))
    for y in range(52, PAGE - 10, 9):
        d.rectangle([16, y, PAGE - 16 - 7 * (y % 3), y + 3], fill=(20, 20, 20))
    return img


def distinct_pages(n: int, seed: int = 0) -> list[Image.Image]:
    """Toy-world frames upscaled to pages, every two more than 12 pHash bits apart (dedup keeps them all)."""
    rng, chars, pages, hashes = random.Random(seed), all_characters(), [], [phash(cover(i)) for i in range(3)]
    while len(pages) < n:
        frame = random_frame(rng, rng.choice(chars), "flat", chars)
        page = render(frame, 64).resize((PAGE, PAGE), Image.BICUBIC)
        h = phash(page)
        if all(distance(h, o) > 12 for o in hashes):
            pages.append(page)
            hashes.append(h)
    return pages


def jpeg_copy(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb stops at the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def make_library(root: Path) -> dict:
    """The toy books; returns what the tests check against."""
    pages = distinct_pages(16)
    fox = root / "fox"
    fox.mkdir(parents=True)
    cover(0).save(fox / "p01.png")
    for i, page in enumerate(pages[0:5]):
        page.save(fox / f"p{i + 2:02d}.png")
    (fox / "p07.jpg").write_bytes(jpeg_copy(pages[1]))  # the same page scanned again
    pages[15].resize((MIN_SIDE, PAGE)).save(fox / "p08.png")  # too narrow
    (fox / "notes.txt").write_text("not a page")
    owl = [cover(1), *pages[5:9], pages[14].resize((48, 48))]  # a cover, 4 frames, a small page
    owl[0].save(root / "owl.pdf", "PDF", save_all=True, append_images=owl[1:], resolution=72)
    cat = root / "cat"  # too short: 3 frames and a duplicate
    cat.mkdir()
    for i, page in enumerate(pages[9:12]):
        page.save(cat / f"page_{i + 1}.png")
    pages[10].resize((100, 100), Image.BICUBIC).save(cat / "page_10.png")
    bad = root / "bad"
    bad.mkdir()
    for i, page in enumerate(pages[12:16]):
        page.save(bad / f"{i + 1:02d}.png")
    (bad / "05_empty.png").write_bytes(b"")
    buf = io.BytesIO()
    pages[0].save(buf, "PNG")
    (bad / "06_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (bad / "07_not_an_image.png").write_text("hello")
    (bad / "08_bomb.png").write_bytes(png_header(20_000, 20_000))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF at all\n")
    (root / "README.txt").write_text("books")
    for a, b in [(pages[1], Image.open(fox / "p07.jpg")), (pages[10], Image.open(cat / "page_10.png"))]:
        assert distance(phash(a), phash(b)) <= 6  # the planted duplicates are near-duplicates
    return {"covers": [cover(0), cover(1)], "frames": pages}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("books")
    info = make_library(root / "in")
    info["root"] = root
    return info


@pytest.fixture(scope="module")
def models(library):
    root = library["root"] / "models"
    tiny_narrative_classifier(root / "classifier", library["frames"], library["covers"] + [cover(2)])
    return {"classifier": root / "classifier", "clip": tiny_clip(root / "clip"), "owl": tiny_owlvit(root / "owl"),
            "blip": tiny_blip(root / "blip")}


def books(library, out: Path, *args, expect: int = 0):
    """Run `storyloop data books IN --out OUT ... --json`; returns (report, output)."""
    result = CliRunner().invoke(app, ["data", "books", str(library["root"] / "in"), "--out", str(out), "--json",
                                      *[str(a) for a in args]], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    if expect:
        return None, result.output
    return json.loads(result.output.strip().splitlines()[-1]), result.output


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def dataset_digest(out: Path) -> str:
    """Everything in the dataset but report.json (which holds timings)."""
    h = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "report.json"):
        h.update(str(path.relative_to(out)).encode() + path.read_bytes())
    return h.hexdigest()


# -- the cheap stages ------------------------------------------------------------------------------------

def test_cheap_stages_count_every_planted_page_exactly(library, tmp_path):
    report, output = books(library, tmp_path / "ds", *CHEAP)
    assert report["counts"] == CHEAP_COUNTS
    assert list(report["counts"])[:7] == ["books", "pages", "resolution", "narrative", "dedup", "min_frames",
                                          "groups"]
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"05_empty.png", "06_truncated.png", "07_not_an_image.png", "08_bomb.png", "broken.pdf",
                            "README.txt"}
    assert report["skipped_files"] == 6
    assert "empty file" in skipped["05_empty.png"] and "decompression bomb" in skipped["08_bomb.png"]
    assert "not a readable PDF" in skipped["broken.pdf"] and "not a book" in skipped["README.txt"]
    data = rows(tmp_path / "ds")
    by_group = {}
    for row in data:
        by_group.setdefault(row["group"], []).append(row["source"])
    assert by_group == {
        "bad": [f"bad/0{i}.png" for i in range(1, 5)],
        "fox": ["fox/p01.png", "fox/p02.png", "fox/p03.png", "fox/p04.png", "fox/p05.png", "fox/p06.png"],
        "owl": [f"owl.pdf#page={i}" for i in range(1, 6)]}
    assert all(row["caption"] == "" for row in data)
    assert Image.open(tmp_path / "ds" / data[0]["image"]).size == (PAGE, PAGE)
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["counts"] == CHEAP_COUNTS
    assert "min_frames" in output and "data books" in output  # the table on the terminal


def test_workers_and_reruns_give_the_identical_dataset(library, tmp_path):
    one, _ = books(library, tmp_path / "one", *CHEAP)
    two, _ = books(library, tmp_path / "two", *CHEAP[:-1], "2", "--set", f"cache_dir={tmp_path / 'other-cache'}")
    assert one["counts"] == two["counts"] == CHEAP_COUNTS
    assert dataset_digest(tmp_path / "one") == dataset_digest(tmp_path / "two")


def test_pdf_pages_are_rendered_at_the_chosen_dpi(library, tmp_path):
    book = Book("owl", str(library["root"] / "in" / "owl.pdf"), "owl.pdf")
    for dpi, side in [(72, PAGE), (144, 2 * PAGE)]:
        pages, skipped, _ = read_book((book, dpi, 89_478_485, str(tmp_path / f"cache{dpi}")))
        assert [(p.page, p.width, p.height) for p in pages] == [(i, side, side) for i in range(1, 6)] + \
            [(6, side // 2, side // 2)]
        assert skipped == []
    pages, _, _ = read_book((book, 72, 89_478_485, str(tmp_path / "cache72")))  # from the cache now
    first = Image.open(tmp_path / "cache72" / pages[0].image)
    assert np.abs(np.asarray(first, float) - np.asarray(cover(1), float)).mean() < 8  # the cover, 1:1 at 72 dpi
    # a page over the pixel limit at this DPI is skipped, by page, like a bomb
    pages, skipped, _ = read_book((book, 72, 5000, str(tmp_path / "small")))
    assert [p.page for p in pages] == [6] and len(skipped) == 5 and "over the 5,000 limit" in skipped[0][1]


def test_min_frames_and_dedup_knobs(library, tmp_path):
    (tmp_path / "books.yaml").write_text(f"min_side: {MIN_SIDE}\ndpi: 72\nmin_frames: 3\nnarrative_filter: false\n"
                                         "captioner: ''\nworkers: 1\n")
    report, _ = books(library, tmp_path / "three", "--config", tmp_path / "books.yaml")
    assert report["counts"] == {**CHEAP_COUNTS, "min_frames": 18, "groups": 4}  # the cat book's 3 frames stay
    assert report["config"]["min_frames"] == 3
    report, _ = books(library, tmp_path / "one", *CHEAP, "--set", "min_frames=1", "--set", "dedup_distance=64")
    # every page is within 64 bits of its book's first: one frame a book
    assert report["counts"] == {**CHEAP_COUNTS, "dedup": 4, "min_frames": 4, "groups": 4}


def test_user_mistakes_are_one_line_and_write_nothing(library, tmp_path):
    out = tmp_path / "ds"
    _, msg = books(library, out, *CHEAP, "--set", "colour=red", expect=1)
    assert "unknown key(s) colour" in msg
    _, msg = books(library, out, "--captions", tmp_path / "c.jsonl", "--no-captions", expect=1)
    assert "exclude each other" in msg
    result = CliRunner().invoke(app, ["data", "books", str(tmp_path / "nowhere"), "--out", str(out)])
    assert result.exit_code == 1 and "no such folder" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["data", "books", str(tmp_path / "empty"), "--out", str(out)])
    assert result.exit_code == 1 and "no books" in result.output
    # a captions file without a caption for some frame fails before anything is written
    (tmp_path / "c.jsonl").write_text(json.dumps({"key": "fox/p02.png", "caption": "a fox"}) + "\n")
    _, msg = books(library, out, *CAPTIONED, "--captions", tmp_path / "c.jsonl", expect=1)
    assert "no caption for 14 image(s)" in msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    books(library, out, *CHEAP)
    _, msg = books(library, out, *CHEAP, expect=1)
    assert "pass --overwrite" in msg
    books(library, out, *CHEAP, "--overwrite")


def test_captions_from_a_file(library, tmp_path):
    books(library, tmp_path / "plain", *CHEAP)
    lines = [{"key": r["source"], "caption": f"page {r['page']} of {r['group']}"} for r in rows(tmp_path / "plain")]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report, _ = books(library, tmp_path / "ds", *CAPTIONED, "--captions", tmp_path / "captions.jsonl")
    assert report["counts"]["captions"] == 15 and report["counts"]["groups"] == 3
    assert [r["caption"] for r in rows(tmp_path / "ds")] == [x["caption"] for x in lines]


# -- the model stages ------------------------------------------------------------------------------------

def test_fine_tuned_classifier_drops_the_covers(library, models, tmp_path):
    report, _ = books(library, tmp_path / "ds", *CHEAP[1:], "--set", f"narrative_model={models['classifier']}")
    # the two covers (fox, owl) go: narrative 18; fox 5 and owl 4 frames stay, bad 4, cat still too short
    assert report["counts"] == {**CHEAP_COUNTS, "narrative": 18, "dedup": 16, "min_frames": 13}
    data = rows(tmp_path / "ds")
    assert "fox/p01.png" not in {r["source"] for r in data}
    assert all(r["narrative_score"] >= 0.9 for r in data)
    _, msg = books(library, tmp_path / "x", *CHEAP[1:], "--set", f"narrative_model={models['classifier']}",
                   "--set", "narrative_label=story", expect=1)
    assert "no label 'story'" in msg and "narrative, other" in msg
    assert not (tmp_path / "x").exists()


def test_zero_shot_clip_scores_by_threshold(library, models, tmp_path):
    common = [*CHEAP[1:], "--set", f"narrative_model={models['clip']}"]
    keep, _ = books(library, tmp_path / "all", *common, "--set", "narrative_threshold=0.0")
    assert keep["counts"] == CHEAP_COUNTS
    assert all(0.0 < r["narrative_score"] < 1.0 for r in rows(tmp_path / "all"))
    _, msg = books(library, tmp_path / "none", *common, "--set", "narrative_threshold=1.01", expect=1)
    drop = json.loads(next(line for line in msg.splitlines() if line.startswith("{")))
    assert drop["counts"] == {**CHEAP_COUNTS, "narrative": 0, "dedup": 0, "min_frames": 0, "groups": 0}
    assert "nothing left after the 'narrative' stage" in msg and not (tmp_path / "none").exists()
    _, msg = books(library, tmp_path / "x", *CHEAP[1:], "--set", f"narrative_model={tmp_path / 'no-model'}",
                   expect=1)
    assert "no such model folder" in msg


def test_inpainting_changes_the_box_and_nothing_else():
    page = Image.new("RGB", (80, 80), (120, 180, 240))
    ImageDraw.Draw(page).rectangle([25, 35, 44, 46], fill=(0, 0, 0))  # "text" inside BOX
    out = np.asarray(remove_text(page, [BOX], 2, make_inpainter("telea", 3)), int)
    before = np.asarray(page, int)
    inside = np.zeros((80, 80), bool)
    inside[BOX[1] - 2:BOX[3] + 2, BOX[0] - 2:BOX[2] + 2] = True
    assert (out[~inside] == before[~inside]).all()
    assert np.abs(out[36:46, 26:44] - before[36:46, 26:44]).mean() > 100  # the black block is gone
    assert np.abs(out[36:46, 26:44] - np.array([120, 180, 240])).mean() < 10  # filled with the sky


def test_text_removal_plugin_through_the_pipeline(library, tmp_path):
    plain, _ = books(library, tmp_path / "plain", *CHEAP)
    report, _ = books(library, tmp_path / "ds", *CHEAP, "--text-removal", "--set",
                      "text_detector=tests.data.test_books:one_box", "--set", "text_mask_grow=0")
    assert report["counts"] == {**CHEAP_COUNTS, "text_removal": 20}
    assert list(report["counts"])[4] == "text_removal"
    for a, b in zip(rows(tmp_path / "plain"), rows(tmp_path / "ds"), strict=True):
        assert b["text_boxes"] == 1 and a["source"] == b["source"]
        x, y = (np.asarray(Image.open(d / r["image"]), int) for d, r in ((tmp_path / "plain", a), (tmp_path / "ds", b)))
        inside = np.zeros(x.shape[:2], bool)
        inside[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
        assert (x[~inside] == y[~inside]).all()
    _, msg = books(library, tmp_path / "x", *CHEAP, "--text-removal", "--set", "text_detector=nosuch.module:fn",
                   expect=1)
    assert "cannot load plugin 'nosuch.module:fn'" in msg


def test_owlvit_detector_wiring(library, models, tmp_path):
    cache = StageCache(tmp_path / "cache")
    page = cache.put_image(library["frames"][0])
    args = dict(detector=str(models["owl"]), queries=("text",), grow=0, inpainter="telea", radius=3, device="cpu",
                cache=cache, progress=False)
    found, n = remove_text_pages({page.stem: page}, threshold=0.0, **args)
    assert n == 1 and len(found[page.stem]["boxes"]) > 0  # every patch scores above 0
    assert found[page.stem]["image"] != str(page.relative_to(cache.root))
    none, _ = remove_text_pages({page.stem: page}, threshold=1.01, **args)  # sigmoid scores never reach 1.01
    assert none[page.stem] == {"image": str(page.relative_to(cache.root)), "boxes": []}


def test_captions_from_a_tiny_blip(library, models, tmp_path):
    report, _ = books(library, tmp_path / "ds", *CAPTIONED, "--set", f"captioner={models['blip']}",
                      "--set", "caption_max_tokens=5")
    assert report["counts"]["captions"] == 15
    assert all(r["caption"].strip() for r in rows(tmp_path / "ds"))


def test_rerun_does_no_model_work_and_gives_the_identical_dataset(library, models, tmp_path, monkeypatch):
    args = CAPTIONED[1:] + ["--set", f"narrative_model={models['classifier']}", "--text-removal",
             "--set", "text_detector=tests.data.test_books:one_box", "--set", f"captioner={models['blip']}"]
    first, out1 = books(library, tmp_path / "a", *args)
    assert "pages 22, narrative 20, text_removal 18, dedup 18" in out1  # files read, pages scored, ...
    digest = dataset_digest(tmp_path / "a")

    def no_model(*a, **k):
        raise AssertionError("a model was loaded on a rerun")

    import storyloop.data.captions as captions
    import storyloop.data.narrative as narrative
    import storyloop.data.text_removal as text_removal

    monkeypatch.setattr(narrative, "NarrativeScorer", no_model)
    monkeypatch.setattr(text_removal, "BoxFinder", no_model)
    monkeypatch.setattr(captions, "Captioner", no_model)
    monkeypatch.setattr(books_mod, "decode_image", no_model)
    monkeypatch.setattr(books_mod, "render_pdf", no_model)
    second, out2 = books(library, tmp_path / "a", *args, "--overwrite")
    assert "pages 0, narrative 0, text_removal 0, dedup 0" in out2
    assert second["counts"] == first["counts"] and second["skipped"] == first["skipped"]
    assert dataset_digest(tmp_path / "a") == digest and first["counts"]["captions"] == 13
    books(library, tmp_path / "b", *args, "--set", f"cache_dir={tmp_path / 'a.cache'}")  # a new OUT, same cache
    assert dataset_digest(tmp_path / "b") == digest


def test_the_dataset_trains_stage1_for_a_step(library, tmp_path):
    from storyloop.generation.tiny import tiny_flux_pipeline

    books(library, tmp_path / "plain", *CHEAP)
    lines = [{"key": r["source"], "caption": f"a page of the {r['group']} book"} for r in rows(tmp_path / "plain")]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    books(library, tmp_path / "ds", *CAPTIONED, "--captions", tmp_path / "captions.jsonl")
    tiny_flux_pipeline("a page of the fox owl bad book".split()).save_pretrained(tmp_path / "flux")
    knobs = dict(rank=4, lora_alpha=4, resolution=32, max_sequence_length=16, report_to="none")
    result = CliRunner().invoke(app, ["generate", "train-stage1", "--model", str(tmp_path / "flux"), "--dataset",
                                      str(tmp_path / "ds"), "--output-dir", str(tmp_path / "run"),
                                      "--max-train-steps", "1",
                                      *[a for k, v in knobs.items() for a in ("--set", f"{k}={v}")]],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_the_table_shows_pages_removed_per_stage_not_across_units():
    from rich.console import Console

    from storyloop.data.books import UNITS
    from storyloop.data.report import Report

    report = Report("books")
    for stage, left in CHEAP_COUNTS.items():
        report.count(stage, left)
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(report.table(UNITS))
    cells = {row[0]: row[1:] for row in ([c.strip() for c in line.strip("│").split("│")]
                                          for line in console.export_text().splitlines() if line.startswith("│"))}
    assert cells["pages"][:3] == ["22", "", "pages"]  # more pages than books: nothing removed
    assert cells["resolution"][:2] == ["20", "2"] and cells["dedup"][:2] == ["18", "2"]
    assert cells["min_frames"][:2] == ["15", "3"]
    assert cells["groups"][:3] == ["3", "", "books"]
