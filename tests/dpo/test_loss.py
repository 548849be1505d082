"""The Diffusion-DPO objective against hand-computed values, and its sign on a real pair: training moves the
policy toward the winner and away from the loser, measured independently of the loss's own metrics."""

import math

import pytest
import torch

from storyloop.dpo.data import assemble
from storyloop.dpo.loss import diffusion_dpo_loss, velocity_error
from storyloop.dpo.trainer import dpo_loss_for_batch, dpo_velocities
from tests.dpo.test_trainer import config, judged, loaded_trainer, models  # noqa: F401  (fixtures)


def test_loss_and_trl_metrics_match_hand_computed_values():
    err_w, ref_w = torch.tensor([0.5, 0.2]), torch.tensor([0.6, 0.2])
    err_l, ref_l = torch.tensor([0.4, 0.3]), torch.tensor([0.4, 0.1])
    loss, m = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=10.0)
    # chosen = -beta/2 (err_w - ref_w) = [0.5, 0]; rejected = -beta/2 (err_l - ref_l) = [0, -1]; inside = [0.5, 1]
    # loss = mean(log(1 + e^-inside)) = (0.474077 + 0.313262) / 2, averaged *after* the log-sigmoid
    assert loss.item() == pytest.approx(0.39366933584916475, abs=1e-6)
    assert loss.item() != pytest.approx(math.log(1 + math.exp(-0.75)), abs=1e-3)  # not -logsigmoid(mean)
    assert m["rewards/chosen"].item() == pytest.approx(0.25)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margins"].item() == pytest.approx(0.75)
    assert m["rewards/accuracies"].item() == 1.0


def test_a_policy_equal_to_its_reference_is_log2_and_a_tie_counts_half():
    e = torch.tensor([0.3, 0.7])
    loss, m = diffusion_dpo_loss(e, e.flip(0), e, e.flip(0), beta=2000.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert m["rewards/accuracies"].item() == 0.5 and m["rewards/margins"].item() == 0.0
    worse = diffusion_dpo_loss(torch.tensor([0.31]), torch.tensor([0.7]), torch.tensor([0.3]), torch.tensor([0.7]),
                               beta=2000.0)[0]
    assert worse.item() == pytest.approx(math.log(1 + math.exp(10.0)), rel=1e-6)  # winner got worse: inside = -10


def test_velocity_error_is_a_per_sample_float32_mean():
    pred = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]], dtype=torch.bfloat16)
    target = torch.tensor([[[0.0, 0.0]], [[3.0, 1.0]]], dtype=torch.bfloat16)
    err = velocity_error(pred, target)
    assert err.dtype == torch.float32 and err.tolist() == [2.5, 5.0]


def test_training_on_one_pair_moves_the_policy_toward_the_winner(settings, judged, tmp_path):
    """The sign, end to end: a few steps on one pair (fixed noise and noise level) lower the loss below log 2
    and raise the margin, and, measured with plain MSEs outside the loss, the policy's error fell on the
    winner relative to the reference and rose on the loser."""
    trainer = loaded_trainer(settings, config(tmp_path, beta=50.0))
    transformer = trainer.model.pipe.transformer
    batch = assemble(trainer.data, [trainer.sampler.pair_at(0)])
    noise = torch.randn(batch.winners.shape, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.5])
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.Adam(params, lr=1e-2)
    transformer.train()
    losses, margins = [], []
    for _ in range(6):
        loss, metrics = dpo_loss_for_batch(transformer, batch, noise, sigmas, trainer.config)
        losses.append(loss.item())
        margins.append(metrics["rewards/margins"].item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and margins[0] == 0.0
    final, metrics = dpo_loss_for_batch(transformer, batch, noise, sigmas, trainer.config)
    assert final.item() < math.log(2) - 0.05 and metrics["rewards/margins"].item() > margins[0]
    with torch.no_grad():
        policy, reference, target = dpo_velocities(transformer, batch, noise, sigmas, trainer.config.guidance_scale)
    mse = lambda a, b: float((a.float() - b.float()).pow(2).mean())  # noqa: E731
    winner = mse(policy[0], target[0]) - mse(reference[0], target[0])
    loser = mse(policy[1], target[1]) - mse(reference[1], target[1])
    assert winner < loser  # toward the winner, relative to the loser
