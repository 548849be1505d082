"""The toy world: deterministic rendering, captions within the vocabulary, an exact codec, exact metrics."""

import random

import numpy as np
import torch

from storyloop.generation.tiny import word_tokenizer
from storyloop.toy.codec import PixelUnshuffleCodec
from storyloop.toy.judge import aesthetic_ranking, assess, prefer
from storyloop.toy.metrics import Evaluated, story_metrics
from storyloop.toy.readers import HEADS
from storyloop.toy.render import render
from storyloop.toy.world import (STYLES, caption, make_stories, preference_characters, random_frame,
                                 split_characters, unseen_characters, vocabulary)


def test_held_out_characters_never_meet_training_characters():
    train, held = split_characters()
    assert len(train) == 96 and len(held) == 24 and not set(train) & set(held)


def test_validation_characters_are_new_to_every_model_and_round():
    train, held = split_characters()
    shown = preference_characters()[:240]
    fresh = unseen_characters([*train, *shown])
    assert not set(fresh) & (set(train) | set(shown) | set(held))
    assert len(fresh) == 1536 - 24 - len(set(train) | set(shown))


def test_a_judged_round_may_show_anyone_but_the_held_out_characters():
    train, held = split_characters()
    pool = preference_characters()
    assert len(pool) == len(set(pool)) == 1536 - 24 and not set(pool) & set(held) and set(train) <= set(pool)
    assert pool == preference_characters()  # seeded


def test_rendering_is_deterministic_and_attributes_show():
    train, _ = split_characters()
    frame = random_frame(random.Random(1), train[0], "flat", train, two_prob=0)
    a, b = np.asarray(render(frame)), np.asarray(render(frame))
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    other = random_frame(random.Random(1), train[1], "flat", train, two_prob=0)
    assert not np.array_equal(a, np.asarray(render(other)))


def test_a_story_keeps_its_protagonist_and_style():
    train, _ = split_characters()
    for story in make_stories(train, 10, seed=3, prefix="s"):
        assert 4 <= len(story.frames) <= 8
        assert {f.protagonist for f in story.frames} == {story.protagonist}
        assert {f.style for f in story.frames} == {story.style} and story.style in STYLES


def test_every_caption_word_is_in_the_vocabulary():
    train, _ = split_characters()
    tok = word_tokenizer(vocabulary(), 64)
    unk = tok.convert_tokens_to_ids("[UNK]")
    rng = random.Random(0)
    for _ in range(2000):
        frame = random_frame(rng, rng.choice(train), rng.choice(STYLES), train, two_prob=0.5)
        ids = tok(caption(frame, rng, rng.choice(["full", "partial", "none"])))["input_ids"]
        assert unk not in ids and len(ids) <= 48


def test_codec_is_exact_for_2px_detail():
    codec = PixelUnshuffleCodec()
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 32, 32) * 2 - 1, scale_factor=2, mode="nearest")
    z = codec.encode(x).latent_dist.mode()
    assert z.shape == (2, 12, 16, 16)
    assert torch.allclose(codec.decode(z).sample, x, atol=1e-6)


def truth_reading(frame):
    return {**frame.truth(), **{f"{k}_p": 1.0 for k in HEADS}}


def test_metrics_and_judge_on_ground_truth_are_perfect():
    train, _ = split_characters()
    story = make_stories(train, 1, seed=5, prefix="s")[0]
    items = [Evaluated(story.story_id, f, truth_reading(f)) for f in story.frames]
    assert set(story_metrics(items).values()) == {100.0}
    good = assess(truth_reading(story.frames[0]), story.frames[0])
    wrong = dict(truth_reading(story.frames[0]), style="flat" if story.style != "flat" else "pastel")
    bad = assess(wrong, story.frames[0])
    assert good.level == 2 and bad.level == 0 and prefer(good, bad) == 1.0 and prefer(good, good) == 0.5


def test_aesthetic_noise_is_the_chance_of_missing_the_best_survivor():
    scores = [2.91, 2.97, 2.95, 2.90]  # survivors' scores differ by hundredths
    assert aesthetic_ranking(scores) == [1, 2, 0, 3]
    rng = random.Random(0)
    picks = [aesthetic_ranking(scores, rng, 0.1)[0] for _ in range(4000)]
    assert abs(picks.count(2) / len(picks) - 0.1) < 0.015  # the runner-up, 10 % of the time
    assert set(picks) == {1, 2}  # a mistake is never worse than the runner-up
    assert aesthetic_ranking([1.0], rng, 1.0) == [0]
