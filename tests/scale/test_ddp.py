"""The trainers' and the sampler's functions take the model as accelerate hands it over under several processes.

`accelerator.prepare` wraps the transformer in DistributedDataParallel when there is more than one
process; DDP has no `.config`, `.dtype` or `.pos_embed` of its own. A real DDP needs a process group:
a one-process gloo group on the CPU is one, so the wrapper here is the real class, around a tiny FLUX.
With one process the gradient all-reduce averages over one copy, so wrapped and unwrapped must agree
exactly: same loss, same gradients, same samples.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler
from torch.nn.parallel import DistributedDataParallel

from storyloop.dpo.config import DPOConfig
from storyloop.dpo.data import PairBatchTensors
from storyloop.dpo.trainer import ADAPTER as DPO, STAGE1, add_dpo_adapter, dpo_loss_for_batch
from storyloop.generation.config import Stage1Config
from storyloop.generation.gsa import install_gsa
from storyloop.generation.lora import lora_config
from storyloop.generation.sampling import sample
from storyloop.generation.stage1 import Stage1Batch, flow_matching_loss
from tests.generation.conftest import GRID, references, targets, text, tiny_transformer

REFS = 2


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group (a file rendezvous: no port to find free)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def with_stage1(seed: int = 0) -> torch.nn.Module:
    """A tiny FLUX with a Stage-1 LoRA of random weights (zero-initialised B would give A no gradient)."""
    model = tiny_transformer(seed)
    model.add_adapter(lora_config(rank=4, alpha=4), adapter_name=STAGE1)
    randomise(model, STAGE1, seed)
    install_gsa(model)
    return model


def randomise(model: torch.nn.Module, adapter: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".{adapter}." in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def loss_and_grads(model, loss_fn, wrapped: bool) -> tuple[torch.Tensor, dict, dict[str, torch.Tensor]]:
    """loss_fn(model or DDP(model)) and the gradient it leaves on every trainable parameter."""
    model.zero_grad(set_to_none=True)
    loss, metrics = loss_fn(DistributedDataParallel(model) if wrapped else model)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g.abs().sum() > 0 for g in grads.values())  # every trainable parameter learns
    return loss.detach(), metrics, grads


def assert_same(plain, wrapped) -> None:
    (loss, metrics, grads), (loss_w, metrics_w, grads_w) = plain, wrapped
    assert torch.equal(loss, loss_w)
    assert metrics.keys() == metrics_w.keys() and all(torch.equal(metrics[k], metrics_w[k]) for k in metrics)
    assert grads.keys() == grads_w.keys()
    assert all(torch.equal(grads[n], grads_w[n]) for n in grads)


def test_stage1_loss_through_ddp_equals_the_plain_model(process_group):
    model = with_stage1()
    model.enable_gradient_checkpointing()
    model.train()
    batch = Stage1Batch(targets(2), text(2, seed=1), references(2 * REFS), GRID)  # two groups of two references
    sigmas, noise = torch.tensor([0.3, 0.8]), targets(2, seed=5)
    config = Stage1Config(num_references=REFS)

    def loss_fn(m):
        return flow_matching_loss(m, batch, sigmas, noise, config), {}

    assert_same(loss_and_grads(model, loss_fn, wrapped=False), loss_and_grads(model, loss_fn, wrapped=True))


def test_dpo_loss_through_ddp_equals_the_plain_model(process_group):
    model = with_stage1()
    add_dpo_adapter(model, DPOConfig(rank=4, lora_alpha=4), frozen=[STAGE1])
    randomise(model, DPO, seed=1)  # a policy away from its reference: the loss is not just log 2
    model.enable_gradient_checkpointing()
    model.train()
    batch = PairBatchTensors(targets(2), targets(2, seed=4), text(2, seed=1), references(2 * REFS), REFS, GRID)
    sigmas, noise, config = torch.tensor([0.3, 0.8]), targets(2, seed=5), DPOConfig(beta=50.0)

    def loss_fn(m):
        return dpo_loss_for_batch(m, batch, noise, sigmas, config)

    plain = loss_and_grads(model, loss_fn, wrapped=False)
    assert all(f".{DPO}." in n for n in plain[2])  # only the DPO LoRA trains; Stage-1 stays frozen
    assert_same(plain, loss_and_grads(model, loss_fn, wrapped=True))


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_sampling_through_ddp_equals_the_plain_model(process_group, use_cache):
    model = with_stage1().eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    args = (scheduler, text(2, seed=1), GRID, [11, 12], references(REFS))
    plain = sample(model, *args, num_inference_steps=3, use_cache=use_cache)
    wrapped = sample(DistributedDataParallel(model), *args, num_inference_steps=3, use_cache=use_cache)
    assert torch.equal(plain, wrapped)
