"""A reference gain: a learnable bias on how much a target attends to its references.

Per attention layer and head, one number added to every target->reference attention logit (GSA's
reference keys, eq. 5); the target's own and text keys are untouched. It starts at zero, where the
model is exactly the one without it, and belongs to an adapter the way a LoRA does: the DPO trainer
can learn it alongside its LoRA (`DPOConfig.train_reference_gain`), `adapter_off` zeroes it for the
reference model, and it is saved in the LoRA's folder and loaded with it.

Why: on the toy world, a fixed bias of +1 on every layer makes Stage-1 beat itself 63 % of the time
(a probe, docs/toy-world-experiments.md), and a full-capacity LoRA learns a round's pairs rather than the
preference behind them; 18 numbers cannot memorise pairs, only move how strongly frames follow their references.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FILE = "reference_gain.safetensors"


class ReferenceGain(nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(heads))
        self.scale = 1.0  # 0 while the adapter is off (see storyloop.generation.lora.adapter_off)


def _attention_layers(transformer) -> dict[str, nn.Module]:
    """The transformer's attention modules (the ones GSA processors serve), by name."""
    return {name: m for name, m in transformer.named_modules()
            if name.endswith(".attn") and hasattr(m, "heads") and hasattr(m, "processor")}


def add_reference_gain(transformer, adapter_name: str) -> None:
    """Give every attention layer a zero gain for `adapter_name` (its parameters are named `.{adapter}.`)."""
    for m in _attention_layers(transformer).values():
        if not hasattr(m, "reference_gains"):
            m.reference_gains = nn.ModuleDict()
        param = next(m.parameters())
        m.reference_gains[adapter_name] = ReferenceGain(m.heads).to(param.device)


def gains(module: nn.Module, adapter_name: str | None = None) -> list[ReferenceGain]:
    found = getattr(module, "reference_gains", None) or {}
    return [g for name, g in found.items() if adapter_name in (None, name)]


def has_reference_gain(transformer, adapter_name: str) -> bool:
    return any(gains(m, adapter_name) for m in _attention_layers(transformer).values())


def reference_logit_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias [heads] this layer adds to target->reference logits, or None when it has no gain at all.

    A gain that is switched off still returns (zeros): the policy and the reference model then take
    the same attention path, so they agree exactly while the gain is zero.
    """
    found = gains(module)
    if not found:
        return None
    return sum(g.scale * g.bias for g in found)


def reference_mask(bias: torch.Tensor, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The additive attention mask [1, heads, 1, keys] putting `bias` [heads] on the reference keys.

    query and keys are [batch, tokens, heads, dim]; a target's keys are its own (as many as its
    queries: text and image), then its references'.
    """
    own, heads = query.shape[1], query.shape[2]
    bias = bias.to(device=query.device, dtype=query.dtype)[:, None].expand(-1, keys.shape[1] - own)
    return torch.cat([bias.new_zeros(heads, own), bias], dim=1)[None, :, None, :]


def reference_gain_state(transformer, adapter_name: str) -> dict[str, torch.Tensor]:
    return {name: g.bias.detach().float().cpu().clone() for name, m in _attention_layers(transformer).items()
            for g in gains(m, adapter_name)}


def set_reference_gain_state(transformer, adapter_name: str, state: dict[str, torch.Tensor]) -> None:
    layers = _attention_layers(transformer)
    if set(state) != {name for name, m in layers.items() if gains(m, adapter_name)}:
        raise ValueError("the reference gain's layers do not match this transformer")
    with torch.no_grad():
        for name, bias in state.items():
            gains(layers[name], adapter_name)[0].bias.copy_(bias)


def save_reference_gain(transformer, adapter_name: str, folder: Path) -> None:
    save_file(reference_gain_state(transformer, adapter_name), str(Path(folder) / FILE))


def load_reference_gain(transformer, adapter_name: str, folder: Path) -> bool:
    """Load the gain saved next to a LoRA, if it has one; whether it did."""
    path = Path(folder) / FILE
    if not path.exists():
        return False
    add_reference_gain(transformer, adapter_name)
    set_reference_gain_state(transformer, adapter_name, load_file(str(path)))
    return True


def gain_parameters(transformer, adapter_name: str) -> list[nn.Parameter]:
    return [g.bias for m in _attention_layers(transformer).values() for g in gains(m, adapter_name)]
