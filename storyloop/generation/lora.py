"""Stage-1 and DPO LoRAs: which layers they adapt, and saving/loading them in diffusers format.

A storyloop LoRA is a folder: `pytorch_lora_weights.safetensors` written by diffusers' LoRA save
API (with the peft adapter config as metadata, so loaders get alpha right), plus
`storyloop_lora.json` (base model, GSA position scheme, rank, steps). Loading checks the latter
first and refuses a LoRA made for another base or position scheme.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from peft import LoraConfig
from peft.tuners.lora.layer import LoraLayer
from peft.utils import get_peft_model_state_dict

from storyloop.generation.gsa import POSITION_SCHEME
from storyloop.generation.fingerprint import BaseIdentity
from storyloop.generation.models import LoraMeta, ModelError
from storyloop.generation.reference_gain import (gains, has_reference_gain, load_reference_gain,
                                                  save_reference_gain)

# Every linear layer inside the transformer blocks (attention, MLPs, AdaLN modulation), named by
# block prefix: a bare "proj_out" would also catch the model's final output projection.
BLOCK_LINEARS = (
    r"(transformer_blocks|single_transformer_blocks)\.\d+\."
    r"(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out"
    r"|norm1\.linear|norm1_context\.linear|norm\.linear)"
)


def lora_config(rank: int = 16, alpha: int = 16, init: bool | str = True) -> LoraConfig:
    """LoRA on all block linears. `init=True` zero-initialises B, so the adapter starts as identity."""
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=BLOCK_LINEARS)


def save_lora(transformer: FluxTransformer2DModel, adapter_name: str, folder: Path, meta: LoraMeta) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    config = transformer.peft_config[adapter_name].to_dict()
    config["target_modules"] = sorted(config["target_modules"]) if isinstance(
        config["target_modules"], (set, list)) else config["target_modules"]
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=state,
                                   transformer_lora_adapter_metadata=config)
    if has_reference_gain(transformer, adapter_name):
        save_reference_gain(transformer, adapter_name, folder)
    meta.dump(folder)
    return folder


def check_lora(folder: Path, base: BaseIdentity, kind: str) -> LoraMeta:
    """The LoRA's metadata, after checking it was made for this base model and position scheme.
    (LoRAs that record the base in an older format are checked against it in that format.)"""
    meta = LoraMeta.read(folder)
    if meta.kind != kind:
        raise ModelError(f"{folder}: this is a {meta.kind} LoRA, expected a {kind} LoRA")
    if not base.accepts(meta.base):
        unseen = " (not in the local Hugging Face cache: load it once first)" if base.transformer is None else ""
        raise ModelError(f"{folder}: LoRA was trained on base {meta.base[:23]}…, but the model is "
                         f"{base.fingerprint[:23]}…{unseen}: use the base it was trained on, or train it again")
    if meta.position_scheme != POSITION_SCHEME:
        raise ModelError(f"{folder}: LoRA uses GSA position scheme {meta.position_scheme!r}, "
                         f"this storyloop uses {POSITION_SCHEME!r}")
    return meta


def check_dpo_parent(meta: LoraMeta, folder: Path, stage1_sha256: str | None, label: str) -> None:
    """A DPO LoRA records the sha256 of the Stage-1 LoRA it was trained over (None: none); refuse it over any
    other. `label` names what holds the Stage-1 LoRA (a round, a pipeline)."""
    if (meta.extra or {}).get("stage1_sha256") != stage1_sha256:
        raise ModelError(f"DPO LoRA {folder} was trained on top of another Stage-1 LoRA than {label} uses")


@contextmanager
def stacking_adapters() -> Iterator[None]:
    """peft warns 'Already found a `peft_config` attribute' whenever a model gets a second adapter; storyloop
    stacks Stage-1 and DPO adapters by design, so that warning says nothing to its users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def add_lora(transformer: FluxTransformer2DModel, config: LoraConfig, adapter_name: str) -> None:
    """A new LoRA adapter on the transformer (beside any it has)."""
    with stacking_adapters():
        transformer.add_adapter(config, adapter_name=adapter_name)


def load_lora(pipe: FluxPipeline, folder: Path, adapter_name: str, base: BaseIdentity, kind: str) -> LoraMeta:
    """Check and load a storyloop LoRA into `pipe.transformer` under `adapter_name`.

    Into the transformer only: a storyloop LoRA adapts nothing else, and diffusers' pipeline-level
    loader would look for text-encoder keys and warn that it found none.
    """
    meta = check_lora(folder, base, kind)
    try:
        state, alphas, metadata = pipe.lora_state_dict(str(folder), return_alphas=True, return_lora_metadata=True)
        if not any("lora" in key for key in state):
            raise ModelError(f"{folder}: no LoRA weights in {', '.join(p.name for p in Path(folder).iterdir())}")
        with stacking_adapters():
            pipe.load_lora_into_transformer(state, network_alphas=alphas, transformer=pipe.transformer,
                                            adapter_name=adapter_name, metadata=metadata, _pipeline=pipe)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{folder}: LoRA does not fit this model: {str(exc).splitlines()[0][:300]}") from exc
    try:
        load_reference_gain(pipe.transformer, adapter_name, folder)
    except ValueError as exc:
        raise ModelError(f"{folder}: {exc}") from exc
    return meta


@contextmanager
def adapter_off(transformer: FluxTransformer2DModel, adapter_name: str) -> Iterator[None]:
    """Scale one adapter to exactly zero for the duration (others stay active; requires_grad untouched).

    peft's `disable_adapter()` would switch off *every* adapter and `set_adapter` re-enables
    gradients; zeroing this adapter's scaling gives the exact "without it" model instead: with the DPO
    LoRA off, the policy is the Stage-1 model.
    """
    layers = [m for m in transformer.modules() if isinstance(m, LoraLayer) and adapter_name in m.scaling]
    saved = [m.scaling[adapter_name] for m in layers]
    for m in layers:
        m.scaling[adapter_name] = 0.0
    biases = [g for m in transformer.modules() for g in gains(m, adapter_name)]  # the adapter's reference gain
    saved_gain = [g.scale for g in biases]
    for g in biases:
        g.scale = 0.0
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            m.scaling[adapter_name] = value
        for g, value in zip(biases, saved_gain):
            g.scale = value
