"""FLUX.1-dev at full size, without memory: the real configuration on the meta device (issue #23).

A meta tensor has a shape, a dtype and a device but no storage, so the 11.9 B-parameter transformer
builds in under a second, and a forward at 1024² with two references costs only Python time. The
meta device refuses to mix with a real one, so a tensor made on the CPU inside a forward fails here
exactly as it would on a GPU. `StrictMeta` catches what meta lets pass: a tensor made on the CPU and
then moved (no error anywhere, but a host-to-device copy in every step on a GPU), and a matrix product
of bf16 with fp32 (meta's matmul kernels allow it; CUDA's refuse it). It watches the forwards; a
backward is autograd replaying them (with gradient checkpointing, the very same forward code again).

Every call runs *outside* `with torch.device("meta")`: inside it, a factory that forgot its `device=`
would land on meta too and hide the very bug these tests look for. Only construction uses it.

Nothing on these paths refuses meta: the losses, GSA, the reference cache and the Euler scheduler's
step all run. What does not run here is the trainers' outer loop, which reads values (`.item()`,
`float(metric)`) and steps the optimizer: the CPU trainer tests run it. The Stage-1 LoRA comes from
`add_adapter` (as the Stage-1 trainer makes it) rather than from a file: a meta model has no weights
to save or load.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.training_utils import cast_training_params
from torch.utils._python_dispatch import TorchDispatchMode

from storyloop.bench.gsa import CONFIGS
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.data import PairBatchTensors
from storyloop.dpo.trainer import ADAPTER as DPO, STAGE1, add_dpo_adapter, dpo_loss_for_batch
from storyloop.generation.config import Stage1Config
from storyloop.generation.flux import References, TextEmbeds, write_reference_cache
from storyloop.generation.gsa import install_gsa
from storyloop.generation.lora import lora_config
from storyloop.generation.sampling import sample
from storyloop.generation.stage1 import Stage1Batch, flow_matching_loss

FLUX = CONFIGS["flux1-dev"]["transformer"]  # 19 double + 38 single blocks, width 3072
TEXT_LEN = CONFIGS["flux1-dev"]["text_len"]  # 512 T5 tokens
META, BF16 = torch.device("meta"), torch.bfloat16
REFS = 2
# Pixels -> token grid: FLUX's VAE downsamples 8x, then 2x2 latent patches make one token.
SIZES = {"1024x1024": (64, 64), "768x1360": (768 // 16, 1360 // 16)}  # 768x1360 -> 48 x 85 tokens
ATTENTION_LAYERS = FLUX["num_layers"] + FLUX["num_single_layers"]
HEADS, HEAD_DIM = FLUX["num_attention_heads"], FLUX["attention_head_dim"]


class StrictMeta(TorchDispatchMode):
    """Watches every aten op for what the meta device lets pass but a GPU run should not.

    `hits`: ops that made a tensor off the meta device (on a GPU: a host-to-device copy, every step).
    `mixed`: matrix products of mixed dtypes, which meta's kernels allow and the CPU and CUDA ones refuse.
    """

    MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
               torch.ops.aten.baddbmm.default}

    def __init__(self):
        super().__init__()
        self.hits: list[tuple[str, list[traceback.FrameSummary]]] = []
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.MATMULS:
            dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
            if len(set(dtypes)) > 1:
                self.mixed.append(f"{func}{dtypes} at {_where(traceback.extract_stack()[:-1])}")
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(o, torch.Tensor) and o.device.type != "meta" for o in outs):
            self.hits.append((str(func), traceback.extract_stack()[:-1]))
        return out

    def unexpected(self, allowed=lambda stack: False) -> list[str]:
        """Off-meta tensors that `allowed(stack)` does not excuse, and every mixed-dtype product, as lines."""
        return [f"{op} at {_where(stack)}" for op, stack in self.hits if not allowed(stack)] + self.mixed


def _where(stack: list[traceback.FrameSummary]) -> str:
    """The innermost three frames outside torch itself: where in storyloop, diffusers or peft it happened."""
    ours = [f for f in stack if "/torch/" not in f.filename]
    return "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in ours[-3:])


def meta_flux(*adapters: str) -> FluxTransformer2DModel:
    """FLUX.1-dev in bf16 on meta, with zero-initialised LoRAs (made on meta too: ~0.4 s each instead of ~6 s
    of CPU initialisation)."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX).to(BF16)
        for name in adapters:
            model.add_adapter(lora_config(), adapter_name=name)
    return model


def text(rows: int) -> TextEmbeds:
    return TextEmbeds(torch.empty(rows, TEXT_LEN, FLUX["joint_attention_dim"], device=META, dtype=BF16),
                      torch.empty(rows, FLUX["pooled_projection_dim"], device=META, dtype=BF16))


def tokens(rows: int, grid: tuple[int, int]) -> torch.Tensor:
    return torch.empty(rows, grid[0] * grid[1], FLUX["in_channels"], device=META, dtype=BF16)


def references(grid: tuple[int, int]) -> References:
    return References(tokens(REFS, grid), text(REFS), grid)


def assert_meta_grads(model: FluxTransformer2DModel, trainable: str, frozen: tuple[str, ...] = ()) -> None:
    """Every parameter of adapter `trainable` has an fp32 meta gradient of its shape; nothing else has one."""
    params = dict(model.named_parameters())
    lora = {n: p for n, p in params.items() if f".{trainable}." in n}
    assert len(lora) == 2 * sum(n.endswith(f"lora_A.{trainable}") for n, _ in model.named_modules()) > 0
    for name, p in lora.items():
        assert p.requires_grad and p.grad is not None, name
        assert (p.grad.device, p.grad.dtype, p.grad.shape) == (META, torch.float32, p.shape), name
    assert not [n for n, p in params.items() if n not in lora and (p.requires_grad or p.grad is not None)]
    for adapter in frozen:  # present on every layer the trainable one is, active, but frozen
        assert sum(f".{adapter}." in n for n in params) == len(lora) and adapter in model.active_adapters()


@pytest.fixture(scope="module")
def stage1_model() -> FluxTransformer2DModel:
    """As train_stage1 sets it up: Stage-1 LoRA, GSA, gradient checkpointing, LoRA in fp32, train mode."""
    model = meta_flux(STAGE1)
    install_gsa(model)
    model.enable_gradient_checkpointing()
    cast_training_params(model, dtype=torch.float32)
    return model.train()


@pytest.fixture(scope="module")
def dpo_model() -> FluxTransformer2DModel:
    """As load_policy + DPOTrainer set it up: frozen Stage-1, zero-initialised trainable DPO LoRA."""
    model = meta_flux(STAGE1)
    with torch.device("meta"):
        add_dpo_adapter(model, DPOConfig(), frozen=[STAGE1])
    install_gsa(model)
    model.enable_gradient_checkpointing()
    cast_training_params(model, dtype=torch.float32)
    return model.train()


@pytest.fixture(scope="module")
def sampling_model() -> FluxTransformer2DModel:
    """As generate_round sets it up for a first round: base + Stage-1, GSA, eval mode."""
    model = meta_flux(STAGE1)
    install_gsa(model)
    return model.eval()


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler config (resolution-dependent shift)."""
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


@pytest.mark.slow  # seconds: every forward walks 57 blocks in Python
@pytest.mark.parametrize("size", SIZES)
def test_stage1_loss_and_backward_at_full_size(stage1_model, size):
    grid = SIZES[size]
    stage1_model.zero_grad(set_to_none=True)
    batch = Stage1Batch(tokens(1, grid), text(1), references(grid), grid)
    with StrictMeta() as watch:
        loss = flow_matching_loss(stage1_model, batch, torch.empty(1, device=META), tokens(1, grid),
                                  Stage1Config(num_references=REFS))
    loss.backward()
    assert (loss.shape, loss.device, loss.dtype) == ((), META, torch.float32)
    assert_meta_grads(stage1_model, STAGE1)
    assert not watch.unexpected()


@pytest.mark.slow  # seconds: every forward walks 57 blocks in Python
@pytest.mark.parametrize("size", SIZES)
def test_dpo_loss_and_backward_at_full_size(dpo_model, size):
    grid = SIZES[size]
    dpo_model.zero_grad(set_to_none=True)
    batch = PairBatchTensors(tokens(1, grid), tokens(1, grid), text(1), references(grid), REFS, grid)
    with StrictMeta() as watch:
        loss, metrics = dpo_loss_for_batch(dpo_model, batch, tokens(1, grid), torch.empty(1, device=META),
                                           DPOConfig())
    loss.backward()
    assert (loss.shape, loss.device, loss.dtype) == ((), META, torch.float32)
    assert {k: (v.shape, v.device) for k, v in metrics.items()} == {k: ((), META) for k in metrics}
    assert_meta_grads(dpo_model, DPO, frozen=(STAGE1,))
    assert not watch.unexpected()


def _sampler_setup(stack) -> bool:
    """CPU tensors the sampler makes on purpose: seeded noise (so a seed gives the same image on any device,
    moved once before the loop) and diffusers' scheduler tables (built from numpy, moved by `device=`)."""
    return any(f.name == "initial_noise" or "/diffusers/schedulers/" in f.filename for f in stack)


@pytest.mark.slow  # seconds: every forward walks 57 blocks in Python
@pytest.mark.parametrize("size", SIZES)
def test_cached_sampling_step_at_full_size(sampling_model, size):
    grid = SIZES[size]
    num_tokens = grid[0] * grid[1]
    refs = references(grid)
    with StrictMeta() as watch:
        # As generate_round does it: the references' K/V written once, then the sampler reads them at every step
        # (its `predict` with that cache is the velocity; the DPO test calls `predict` with a cache directly).
        cache = write_reference_cache(sampling_model, refs)
        cached = sample(sampling_model, flux_scheduler(), text(1), grid, [0], refs, num_inference_steps=1,
                        reference_cache=cache)
    assert len(cache.cache) == ATTENTION_LAYERS
    for layer, (k, v) in cache.cache.items():  # reference image K/V only, already rotated to their slots
        assert k.shape == v.shape == (REFS, num_tokens, HEADS, HEAD_DIM), layer
        assert (k.device, k.dtype, v.device, v.dtype) == (META, BF16, META, BF16), layer
    assert (cached.shape, cached.device, cached.dtype) == ((1, num_tokens, FLUX["in_channels"]), META, torch.float32)
    assert not watch.unexpected(_sampler_setup)


@pytest.mark.slow  # seconds: every forward walks 57 blocks in Python
@pytest.mark.parametrize("size", SIZES)
def test_uncached_sampling_step_at_full_size(sampling_model, size):
    """[target, references] in one forward: this stopped on "Tensor on device cpu is not on the expected
    device meta!" before 39f557e (reference timesteps made on the CPU)."""
    grid = SIZES[size]
    with StrictMeta() as watch:
        out = sample(sampling_model, flux_scheduler(), text(1), grid, [0], references(grid), num_inference_steps=1,
                     use_cache=False)
    assert (out.shape, out.device, out.dtype) == ((1, grid[0] * grid[1], FLUX["in_channels"]), META, torch.float32)
    assert not watch.unexpected(_sampler_setup)


def test_strict_meta_sees_a_tensor_made_on_the_cpu_and_a_mixed_dtype_product():
    with StrictMeta() as watch:
        torch.zeros(3).to(META) + torch.empty(3, device=META)
    assert [op for op, _ in watch.hits] == ["aten.zeros.default"]
    assert "test_full_size_meta.py" in watch.unexpected()[0]
    assert not watch.unexpected(lambda stack: True)
    with StrictMeta() as watch:
        torch.empty(2, 3, device=META, dtype=BF16) @ torch.empty(3, 2, device=META)  # meta itself allows it
    assert watch.mixed and not watch.hits
