"""Where the toy world's committed weights live, and how to train each of them again."""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
BASE = WEIGHTS / "base"  # a diffusers FLUX pipeline folder (storyloop toy train-base)
STAGE1 = WEIGHTS / "stage1"  # the Stage-1 GSA LoRA for BASE (storyloop toy train-stage1)
READERS = WEIGHTS / "readers"  # attribute readers (storyloop toy train-readers)


def require(path: Path, command: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `{command}` to train it")
    return path
