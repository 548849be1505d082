"""Where would Diffusion-DPO put a reference-guidance scale, given a judged round's pairs?

    .venv/bin/storyloop demo --loop            # leaves the judged round in demo-data/
    .venv/bin/python scripts/toy_dpo_guidance_probe.py demo-data --batches 300

The family of models "Stage-1 with reference guidance at scale s" (velocity v_without + s (v_with -
v_without), `generate run --reference-guidance-scale`) holds the DPO reference model at s = 1, and on
the toy world its members at s = 1.5-3 win 65-72 % against s = 1 by the scripted judge
(`scripts/toy_guidance_ceiling.py`). If DPO's objective agreed with the judge, it would pick such an
s from the round's pairs. It can be read off exactly, without training: for one (pair, noise, noise
level), (err_w - ref_w) - (err_l - ref_l) = a (s - 1) + b (s - 1)^2, so the loss at every s is a sum
over sampled (a, b). The pairs, noise and noise levels are drawn as the trainer draws them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from storyloop.db import session_scope
from storyloop.db.rounds import RoundError, get_round
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.data import assemble, encode_pairs
from storyloop.dpo.loss import diffusion_dpo_loss, velocity_error
from storyloop.dpo.pools import AggregationPolicy, round_pools
from storyloop.dpo.sampler import PairSampler
from storyloop.dpo.trainer import ADAPTER, load_policy
from storyloop.generation.encoding_cache import EncodingCache
from storyloop.generation.flux import predict, write_grouped_reference_cache
from storyloop.generation.lora import adapter_off
from storyloop.generation.stage1 import sample_sigmas
from storyloop.settings import Settings
from storyloop.toy.loop import LoopConfig
from storyloop.toy.model import IMAGE_SIZE, MAX_SEQUENCE_LENGTH

LEVELS = ("consistency", "anatomy", "aesthetics")


def dpo_loss_at(scales: np.ndarray, a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """Mean -log sigmoid(inside) at each scale, inside = -beta/2 (a (s-1) + b (s-1)^2)."""
    x = scales[:, None] - 1.0
    return np.logaddexp(0.0, 0.5 * beta * (a * x + b * x * x)).mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="a `demo --loop` data directory (its judged round-1)")
    parser.add_argument("--batches", type=int, default=300, help="batches of pairs to sample")
    parser.add_argument("--round", default="round-1")
    args = parser.parse_args()
    if not (args.data_dir / "storyloop.db").exists():
        parser.error(f"{args.data_dir} holds no storyloop.db: run `storyloop demo --loop` first (it writes demo-data/)")
    loop = LoopConfig()
    c = DPOConfig(**{**loop.dpo, "round": args.round, "resolution": IMAGE_SIZE,
                     "max_sequence_length": MAX_SEQUENCE_LENGTH, "seed": loop.seed})
    settings = Settings.resolve(data_dir=args.data_dir, db_url=None)
    with session_scope(settings.db_url) as session:
        try:
            pools = round_pools(session, c.round, AggregationPolicy(c.min_agreement))
        except RoundError as exc:
            parser.error(f"{args.data_dir}: {exc}")
        model = load_policy(get_round(session, c.round), c, "cpu", torch.float32)
        cache = EncodingCache(args.data_dir / "dpo-round-1" / "cache", f"{model.base}|{c.resolution}|{c.max_sequence_length}")
        data = encode_pairs(session, model.pipe, settings.store_dir, pools, cache, c.resolution, c.max_sequence_length)
    sampler = PairSampler(pools, seed=c.seed, level_weights=c.level_weights)
    level_of = dict(zip(sampler.lose_ids.tolist(), sampler.lose_level.tolist()))
    transformer = model.pipe.transformer.eval()
    sched, b_size = dict(model.pipe.scheduler.config), c.train_batch_size

    a_all, b_all, sigma_all, level_all = [], [], [], []
    with torch.no_grad(), adapter_off(transformer, ADAPTER):  # the DPO LoRA is zero anyway: Stage-1
        for step in tqdm(range(args.batches), desc="pairs", unit="batch"):
            pairs = [sampler.pair_at(step * b_size + i) for i in range(b_size)]
            batch = assemble(data, pairs)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([c.seed, step]).generate_state(1)[0]))
            sigmas = sample_sigmas(b_size, batch.num_tokens, sched, c.logit_mean, c.logit_std, gen)
            noise = torch.randn(batch.winners.shape, generator=gen)
            s = sigmas.view(-1, 1, 1)
            tokens = torch.cat([(1 - s) * batch.winners + s * noise, (1 - s) * batch.losers + s * noise])
            target = torch.cat([noise - batch.winners, noise - batch.losers])
            sig2, text2 = torch.cat([sigmas, sigmas]), batch.text.cat(batch.text)
            n = batch.refs_per_pair
            refs = write_grouped_reference_cache(transformer, batch.refs, n, c.guidance_scale)
            index = torch.arange(b_size * n).view(b_size, n).repeat(2, 1)
            with_refs = predict(transformer, tokens, sig2, text2, batch.grid, c.guidance_scale, refs, index).float()
            without = predict(transformer, tokens, sig2, text2, batch.grid, c.guidance_scale).float()
            delta = with_refs - without
            a = 2 * ((with_refs - target) * delta).flatten(1).mean(1)
            b = delta.pow(2).flatten(1).mean(1)
            a, b = (a[:b_size] - a[b_size:]).numpy(), (b[:b_size] - b[b_size:]).numpy()
            if step == 0:  # the closed form is the trainer's loss, exactly, at any scale
                for scale in (0.5, 2.0):
                    err = velocity_error(without + scale * delta, target)
                    ref = velocity_error(with_refs, target)
                    loss, _ = diffusion_dpo_loss(err[:b_size], err[b_size:], ref[:b_size], ref[b_size:], c.beta)
                    closed = dpo_loss_at(np.array([scale]), a, b, c.beta)[0]
                    assert abs(float(loss) - closed) < 1e-4, (float(loss), closed)
            a_all.append(a), b_all.append(b), sigma_all.append(sigmas.numpy())
            level_all.append([level_of[loser] for _, _, loser in pairs])
    a, b, sigma, level = (np.concatenate(x) for x in (a_all, b_all, sigma_all, level_all))

    scales = np.round(np.arange(-1.0, 8.01, 0.1), 2)

    def best(mask=slice(None), beta=c.beta) -> float:
        return float(scales[np.argmin(dpo_loss_at(scales, a[mask], b[mask], beta))])

    print(f"{len(a)} (pair, noise, noise level) samples from round {c.round!r}, beta {c.beta:g}")
    print(f"DPO loss is lowest at s = {best():g}; "
          f"references move the prediction towards the winner (a < 0) in {100 * (a < 0).mean():.1f} %")
    for scale, value in zip((0, 1, 1.5, 2, 3), dpo_loss_at(np.array([0, 1, 1.5, 2, 3.0]), a, b, c.beta)):
        print(f"  s = {scale:g}: loss {value:.4f}")
    for i, name in enumerate(LEVELS):
        m = level == i
        if m.any():
            print(f"  losers failing {name}: {m.sum()} samples, a < 0 in {100 * (a[m] < 0).mean():.1f} %, "
                  f"lowest at s = {best(m):g}")
    for lo, hi in ((0, 0.3), (0.3, 0.6), (0.6, 0.8), (0.8, 1.01)):
        m = (sigma >= lo) & (sigma < hi)
        print(f"  noise level [{lo}, {hi}): {m.sum()} samples, lowest at s = {best(m):g}")
    for beta in (100.0, 2000.0):
        at = np.array([1.0, best(beta=beta), 1.5, 2.0, 3.0])
        values = ", ".join(f"{v:.4f} at s = {x:g}" for x, v in zip(at, dpo_loss_at(at, a, b, beta)))
        print(f"  beta {beta:g}: lowest at s = {best(beta=beta):g} (loss {values})")


if __name__ == "__main__":
    main()
