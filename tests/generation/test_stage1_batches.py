"""Stage-1 batches from aspect-ratio buckets: pure functions of the rng, one target grid per batch."""

import numpy as np
import pytest
import torch

from storyloop.generation.config import Stage1Config
from storyloop.generation.flux import TextEmbeds
from storyloop.generation.stage1 import EncodedDataset, make_batch, target_buckets

C = 4


def dataset(grids_per_group: list[list[tuple[int, int]]]) -> EncodedDataset:
    groups, grids = [], []
    for g in grids_per_group:
        groups.append(list(range(len(grids), len(grids) + len(g))))
        grids += g
    latents = [torch.full((h * w, C), float(i)) for i, (h, w) in enumerate(grids)]  # value = image index
    n = len(grids)
    captions = [TextEmbeds(torch.full((1, 2, 3), float(i)), torch.zeros(1, 5)) for i in range(n)]
    empty = TextEmbeds(torch.full((1, 2, 3), -1.0), torch.zeros(1, 5))
    return EncodedDataset(groups, latents, grids, captions, empty, target_buckets(groups, grids),
                          [(w * 4, h * 4) for h, w in grids], "x")


def cfg(**kw):
    return Stage1Config(**{"num_references": 2, "train_batch_size": 3, "caption_dropout": 0.0, **kw})


SQUARE, WIDE, TALL = (4, 4), (3, 5), (5, 3)
MIXED = dataset([[SQUARE, WIDE, TALL, SQUARE], [SQUARE] * 3, [WIDE, WIDE, TALL], [TALL, SQUARE, SQUARE, SQUARE, WIDE]])


def image_ids(t: torch.Tensor) -> list[int]:
    return [int(x) for x in t[:, 0, 0]]


def test_every_image_is_a_target_as_often_as_without_buckets():
    """P(image i of group g is the target) = 1 / (G |g|), bucket or not: exactly, from the bucket weights."""
    chance = {}
    for b in MIXED.buckets:
        for k, members in enumerate(b.members):
            for i in members:
                chance[i] = b.p * b.group_p[k] / len(members)
    assert sum(b.p for b in MIXED.buckets) == pytest.approx(1.0)
    for g in MIXED.groups:
        for i in g:
            assert chance[i] == pytest.approx(1 / (len(MIXED.groups) * len(g)))


def test_a_batch_has_one_target_grid_and_references_at_their_own():
    seen = set()
    for step in range(40):
        batch = make_batch(MIXED, cfg(), np.random.default_rng([0, step]))
        targets = image_ids(batch.target)
        assert {MIXED.grids[i] for i in targets} == {batch.grid}
        refs = batch.refs.tokens if isinstance(batch.refs.tokens, list) else list(batch.refs.tokens)
        ref_ids = [int(r[0, 0]) for r in refs]
        assert [g for g in batch.refs.grids] == [MIXED.grids[i] for i in ref_ids]
        for t, (target, pair) in enumerate(zip(targets, zip(ref_ids[::2], ref_ids[1::2]))):
            group = next(g for g in MIXED.groups if target in g)
            assert set(pair) <= set(group) and target not in pair and len(set(pair)) == 2
        seen.add(batch.grid)
    assert seen == {SQUARE, WIDE, TALL}


def test_batches_are_a_pure_function_of_the_rng_key():
    a = make_batch(MIXED, cfg(caption_dropout=0.5), np.random.default_rng([3, 1, 0, 0]))
    b = make_batch(MIXED, cfg(caption_dropout=0.5), np.random.default_rng([3, 1, 0, 0]))
    assert torch.equal(a.target, b.target) and torch.equal(a.text.prompt_embeds, b.text.prompt_embeds)
    assert a.refs.grids == b.refs.grids and all(torch.equal(x, y) for x, y in zip(a.refs.tokens, b.refs.tokens))
    assert make_batch(MIXED, cfg(), np.random.default_rng([3, 1, 0, 0]), size=5).target.shape[0] == 5


def test_one_bucket_draws_exactly_what_the_sampler_without_buckets_drew():
    """Square data: the rng calls of old (uniform group, n + 1 of it without replacement, dropout), call for call."""
    square = dataset([[SQUARE] * 3, [SQUARE] * 4, [SQUARE] * 5])
    for seed in range(5):
        config = cfg(caption_dropout=0.3)
        batch = make_batch(square, config, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        targets, refs, drop = [], [], []
        for _ in range(config.train_batch_size):
            group = square.groups[rng.integers(len(square.groups))]
            chosen = rng.choice(len(group), size=3, replace=False)
            targets.append(group[chosen[0]])
            refs += [group[c] for c in chosen[1:]]
            drop.append(rng.random() < config.caption_dropout)
        assert image_ids(batch.target) == targets and [int(r[0, 0]) for r in batch.refs.tokens] == refs
        assert [bool(x < 0) for x in batch.text.prompt_embeds[:, 0, 0]] == drop
        assert batch.refs.uniform and batch.grid == SQUARE
