"""The flow-matching Diffusion-DPO objective (paper eqs. 7-8; Wallace et al. 2023 for diffusion).

Errors are per-sample velocity MSEs (mean over latent elements, float32). With
inside = -beta/2 * ((err_w - ref_w) - (err_l - ref_l)), the loss is -log sigmoid(inside), averaged
over the batch *after* the log-sigmoid. Metrics use trl's names: rewards/chosen =
-beta/2 * (err_w - ref_w), likewise rejected; accuracies count a tie as half, so a policy equal
to its reference scores exactly 0.5 (and the loss exactly log 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def velocity_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error, in float32."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def diffusion_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
                       beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    chosen = -0.5 * beta * (err_w - ref_w)
    rejected = -0.5 * beta * (err_l - ref_l)
    inside = chosen - rejected
    loss = -F.logsigmoid(inside).mean()
    accuracy = (inside > 0).float() + 0.5 * (inside == 0).float()
    metrics = {"loss": loss.detach(), "rewards/chosen": chosen.detach().mean(),
               "rewards/rejected": rejected.detach().mean(), "rewards/accuracies": accuracy.mean(),
               "rewards/margins": (chosen - rejected).detach().mean()}
    return loss, metrics
