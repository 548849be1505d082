"""Encoded latents and text embeddings on disk, keyed by content hash, so training never re-encodes.

One safetensors file per entry. The key mixes what produced the entry (base model, resolution,
sequence length) with what was encoded (image sha256 or prompt), so a changed model or setting
never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CacheError(RuntimeError):
    """A cache entry that cannot be read; the message names the file and the fix."""


class EncodingCache:
    def __init__(self, folder: Path, context: str):
        self.folder = Path(folder)
        self.context = context  # e.g. "<base fingerprint>|1024|512"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{hashlib.sha256(f'{self.context}|{name}'.encode()).hexdigest()}.safetensors"

    def get(self, name: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cached tensors for `name`, computing and storing them on a miss."""
        path = self.path(name)
        if path.exists():
            try:
                return load_file(path)
            except (SafetensorError, OSError, ValueError) as exc:
                raise CacheError(f"cache entry {path} is corrupt ({exc}): delete it to re-encode") from None
        tensors = {k: v.detach().contiguous().cpu() for k, v in compute().items()}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, tmp)
        tmp.replace(path)  # never a half-written entry under the real name
        return tensors

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.safetensors"))
