"""Resumable LoRA checkpoints shared by the Stage-1 and DPO trainers.

A checkpoint holds one adapter's weights, the optimizer state and the step: the frozen base is never
copied. Each is written under a temporary name and renamed, so a kill mid-save leaves no half file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from storyloop.generation.models import ModelError
from storyloop.generation.reference_gain import reference_gain_state, set_reference_gain_state


def checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders under `out`, oldest first."""
    return sorted((Path(out) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(transformer, adapter: str, optimizer, out: Path, step: int, keep: int,
                    data_fingerprint: str | None = None) -> None:
    """`data_fingerprint` names the training data, so a resume on other data is refused."""
    folder = Path(out) / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    lora = get_peft_model_state_dict(transformer, adapter_name=adapter)
    tmp = folder / "state.pt.tmp"
    torch.save({"lora": lora, "gain": reference_gain_state(transformer, adapter), "optimizer": optimizer.state_dict(),
                "step": step, "data": data_fingerprint}, tmp)
    tmp.replace(folder / "state.pt")
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)


class ResumeError(ModelError):
    """A checkpoint that this run must not continue from; the message says why."""


def resume_latest(transformer, adapter: str, optimizer, out: Path, data_fingerprint: str | None = None) -> int:
    """Load the newest checkpoint into the adapter and optimizer; the step to continue from (0: none)."""
    found = checkpoints(out)
    if not found:
        return 0
    state = torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=True)
    saved = state.get("data")
    if data_fingerprint and saved and saved != data_fingerprint:
        raise ResumeError(f"{found[-1]}: trained on other data (dataset sha256 {saved[:12]}..., now "
                          f"{data_fingerprint[:12]}...): start a new output_dir instead of --resume")
    set_peft_model_state_dict(transformer, state["lora"], adapter_name=adapter)
    if state.get("gain"):
        set_reference_gain_state(transformer, adapter, state["gain"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"]
