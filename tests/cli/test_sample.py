"""`storyloop sample` and `storyloop story` on the toy world's committed model (64x64, 2 steps): no database."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.generation.config import DrawConfig
from storyloop.generation.draw import frame_seed, read_record
from storyloop.generation.fingerprint import base_fingerprint
from storyloop.hashing import sha256_file, sha256_path
from storyloop.generation.pipeline import StoryFluxPipeline
from storyloop.generation.run import GenerateConfig
from storyloop.toy.assets import WEIGHTS
from tests.conftest import make_image

MODEL = ["--model", str(WEIGHTS / "base"), "--stage1-lora", str(WEIGHTS / "stage1")]
FAST = ["--steps", "2", "--height", "64", "--width", "64", "--max-sequence-length", "48"]


def run(*args, expect=0):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def pipe():
    p = StoryFluxPipeline.from_pretrained(WEIGHTS / "base")
    p.load_lora_weights(WEIGHTS / "stage1")
    p.set_progress_bar_config(disable=True)
    return p


def draw(pipe, prompt, references, seeds) -> list[np.ndarray]:
    out = pipe(prompt, references=references, num_inference_steps=2, height=64, width=64, max_sequence_length=48,
               generator=[torch.Generator().manual_seed(s) for s in seeds], num_images_per_prompt=len(seeds))
    return [np.asarray(im) for im in out.images]


@pytest.fixture
def refs(tmp_path):
    return (make_image(tmp_path / "refs" / "mia.png", (200, 40, 40), size=(64, 64)),
            make_image(tmp_path / "refs" / "tom.png", (40, 40, 200), size=(48, 64)),
            make_image(tmp_path / "refs" / "ball.png", (40, 200, 40), size=(64, 48)))


def test_draw_config_defaults_are_generate_runs():
    run_defaults = GenerateConfig()
    for name in ("num_inference_steps", "guidance_scale", "height", "width", "max_sequence_length", "memory",
                 "quantization"):
        assert DrawConfig.default(name) == getattr(run_defaults, name), name


def test_sample_writes_a_png_per_image_and_prints_where_it_went(tmp_path, refs, pipe):
    mia, tom, ball = refs
    out = tmp_path / "out"
    result = run("sample", *MODEL, *FAST, "--prompt", "a fox reads a book", "--ref", f"Mia={mia}",
                 "--ref", f"Tom={tom}", "--ref", ball, "--ref", f"Mia={ball}", "--seed", 5, "-n", 2, "--out", out)
    lines = result.stdout.strip().splitlines()
    assert lines == [str(out / "seed-5.png"), str(out / "seed-6.png")]
    made = [np.asarray(Image.open(line)) for line in lines]
    # the slots: Mia's two images, then Tom's, then the unnamed one (names in order of first appearance)
    expected = draw(pipe, "a fox reads a book", [mia, ball, tom, ball], [5, 6])
    assert all(np.array_equal(a, b) for a, b in zip(made, expected)) and len(made) == 2
    assert not np.array_equal(made[0], made[1])
    record = read_record(out / "seed-6.png")  # how it was drawn, in the PNG itself
    assert record["prompt"] == "a fox reads a book" and record["seed"] == 6
    assert record["references"] == [{"character": c, "sha256": sha256_file(p)}
                                    for c, p in (("Mia", mia), ("Mia", ball), ("Tom", tom), (None, ball))]
    assert record["stage1_lora_sha256"] == sha256_path(WEIGHTS / "stage1") and record["dpo_lora_sha256"] is None
    assert (record["model"], record["num_inference_steps"], record["height"], record["dtype"]) == (
        str(WEIGHTS / "base"), 2, 64, "float32")
    assert record["model_fingerprint"] == base_fingerprint(str(WEIGHTS / "base"))  # the weights, wherever they are


@pytest.mark.parametrize("ref, message", [
    ("Mia=", "--ref 'Mia=': expected NAME=IMAGE"),
    ("=x.png", "--ref '=x.png': expected NAME=IMAGE"),
    ("Mia={missing}", "reference of 'Mia' {missing}: no such file"),
    ("{missing}", "reference {missing}: no such file"),
    ("{broken}", "reference {broken}: not a readable image"),
])
def test_sample_refuses_a_bad_ref_before_anything_is_drawn(tmp_path, ref, message):
    missing, broken = tmp_path / "gone.png", tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    names = {"missing": missing, "broken": broken}
    result = run("sample", *MODEL, *FAST, "--prompt", "a fox", "--ref", ref.format(**names),
                 "--out", tmp_path / "out", expect=1)
    assert message.format(**names) in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_sample_with_a_missing_model_is_one_clear_error(tmp_path):
    result = run("sample", "--model", tmp_path / "nowhere", "--stage1-lora", WEIGHTS / "stage1", "--prompt", "a fox",
                 "--out", tmp_path / "out", expect=1)
    assert "not a diffusers FLUX folder" in result.stderr and not (tmp_path / "out").exists()


def test_sample_refuses_a_lora_of_the_wrong_kind(tmp_path):
    result = run("sample", *MODEL[:2], "--stage1-lora", WEIGHTS / "base", "--prompt", "a fox",
                 "--out", tmp_path / "out", expect=1)
    assert "not a storyloop LoRA folder" in result.stderr


def write_story(folder, rows, name: str = "story.jsonl"):
    path = folder / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def story_rows():
    return [
        {"id": "a0", "story_id": "alpha", "frame_index": 0, "prompt": "a fox reads",
         "references": ["refs/mia.png"]},
        {"id": "a1", "story_id": "alpha", "frame_index": 1, "prompt": "a fox sleeps",
         "references": {"Mia": ["refs/mia.png"], "Tom": ["refs/tom.png", "refs/ball.png"]}},
        {"id": "b0", "story_id": "beta", "frame_index": 0, "prompt": "a cat", "candidates": ["refs/ball.png"]},
    ]


def test_story_draws_every_frame_with_stable_seeds(tmp_path, refs, pipe):
    mia, tom, ball = refs
    out = tmp_path / "out"
    result = run("story", write_story(tmp_path, story_rows()), *MODEL, *FAST, "-n", 2, "--seed", 3, "--out", out)
    assert "6 image(s) of 3 frame(s)" in result.stdout
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["alpha/0_0.png", "alpha/0_1.png", "alpha/1_0.png", "alpha/1_1.png", "beta/0_0.png",
                     "beta/0_1.png"]
    # frame alpha/1: its mapping's slots, each image with its frame seed
    seeds = [frame_seed(3, "alpha", 1, k) for k in range(2)]
    expected = draw(pipe, "a fox sleeps", [mia, tom, ball], seeds)
    assert all(np.array_equal(np.asarray(Image.open(out / f"alpha/1_{k}.png")), expected[k]) for k in range(2))

    # the same frames in another order, without the others: the same images
    again = tmp_path / "again"
    run("story", write_story(tmp_path, story_rows()[:0:-1], "reordered.jsonl"), *MODEL, *FAST, "-n", 2,
        "--seed", 3, "--out", again)
    assert not (again / "alpha/0_0.png").exists()
    assert all((again / f).read_bytes() == (out / f).read_bytes() for f in ("alpha/1_0.png", "beta/0_1.png"))


def test_story_resume_keeps_what_was_drawn_as_asked_and_redraws_the_rest(tmp_path, refs):
    out, story = tmp_path / "out", write_story(tmp_path, story_rows())
    args = ("story", story, *MODEL, *FAST, "-n", 2, "--seed", 3, "--out", out)
    run(*args)
    first = {p: p.read_bytes() for p in out.rglob("*.png")}
    (out / "alpha/0_1.png").unlink()  # a run stopped before this frame's second image
    cut = first[out / "beta/0_0.png"]
    (out / "beta/0_0.png").write_bytes(cut[:len(cut) - 40])  # (or cut short: its record is there, its end not)
    record = read_record(out / "alpha/1_0.png")
    assert (record["story_id"], record["frame_index"], record["k"]) == ("alpha", 1, 0)

    result = run(*args, "--resume")
    assert "4 image(s) of 2 frame(s) written" in result.stdout and "1 frame(s) already drawn as asked, kept" in (
        result.stdout)
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == first  # the same images as one run draws
    done = run(*args, "--resume").stdout  # all there: the model is not even loaded
    assert "0 image(s) of 0 frame(s) written" in done and "3 frame(s) already drawn as asked" in done

    # asked differently (another reference image for Mia), only the frames that use it are drawn again
    make_image(tmp_path / "refs" / "mia.png", (10, 10, 10), size=(64, 64))
    result = run(*args, "--resume")
    assert "4 image(s) of 2 frame(s) written" in result.stdout  # alpha/0 and alpha/1; beta has no Mia
    assert (out / "beta/0_0.png").read_bytes() == first[out / "beta/0_0.png"]
    assert (out / "alpha/1_0.png").read_bytes() != first[out / "alpha/1_0.png"]
    # and other settings draw everything again
    assert "6 image(s) of 3 frame(s)" in run("story", story, *MODEL, *FAST, "-n", 2, "--seed", 4, "--out", out,
                                             "--resume").stdout


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[1].update(references=["refs/gone.png"]), "line 2: references[0] 'refs/gone.png'"),
    (lambda rows: rows[2].update(story_id=".."), "line 3: story id '..' cannot be a folder name"),
    (lambda rows: rows[2].update(story_id="alpha"), "line 3: story 'alpha' frame 0 is also"),
    (lambda rows: rows[0].pop("prompt"), "line 1: field 'prompt'"),
])
def test_story_refuses_a_bad_file_naming_the_line(tmp_path, refs, change, message):
    rows = story_rows()
    change(rows)
    result = run("story", write_story(tmp_path, rows), *MODEL, *FAST, "--out", tmp_path / "out", expect=1)
    stderr = " ".join(result.stderr.split())
    assert "story.jsonl" in stderr and message in stderr, stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_story_of_an_unknown_format_or_missing_file_is_refused(tmp_path):
    (tmp_path / "story.txt").write_text("{}")
    assert "cannot tell its format" in run("story", tmp_path / "story.txt", *MODEL, "--out", tmp_path / "o",
                                           expect=1).stderr
    assert "no such story file" in run("story", tmp_path / "gone.jsonl", *MODEL, "--out", tmp_path / "o",
                                       expect=1).stderr
