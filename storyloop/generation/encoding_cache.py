"""Encoded latents and text embeddings on disk, keyed by content hash, so training never re-encodes.

One safetensors file per entry. The key mixes what produced the entry (base model, resolution,
sequence length, dtype) with what was encoded (image sha256 or prompt), so a changed model or
setting never reads a stale entry.

Entries are stored in the dtype the model reads them in (bfloat16 for a bf16 run: half of float32,
and nothing is lost since the transformer casts its inputs to its own dtype) and come back
memory-mapped: a tensor's bytes stay in the file (the OS page cache, shared by every process of a
run on one machine), not in each process's RAM. A 5,000-image Stage-1 set's T5 embeddings are ~20 GB
in bf16; callers keep per-row tensors and stack only a batch's rows.
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
    def __init__(self, folder: Path, context: str, dtype: torch.dtype | None = None):
        self.folder = Path(folder)
        self.dtype = dtype  # None: as computed
        self.context = context if dtype is None else f"{context}|{str(dtype).removeprefix('torch.')}"
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
        tensors = {k: v.detach().to("cpu", self.dtype or v.dtype).contiguous() for k, v in compute().items()}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, tmp)
        tmp.replace(path)  # never a half-written entry under the real name
        return load_file(path)  # the file's mapping, not the copy just written

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.safetensors"))
