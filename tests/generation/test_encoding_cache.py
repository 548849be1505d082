"""The encoding cache: computed once, stored in the model's dtype, read back memory-mapped (not copied)."""

import pytest
import torch

from storyloop.generation.encoding_cache import CacheError, EncodingCache


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file mapped into this process."""
    out = []
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, parts[5]))
    return out


def backed_by(tensor: torch.Tensor, path) -> bool:
    ptr = tensor.data_ptr()
    return any(start <= ptr < end and name == str(path) for start, end, name in mapped_files())


def test_entries_are_computed_once_stored_in_the_model_dtype_and_read_memory_mapped(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6, dtype=torch.float32).view(2, 3) / 3}

    cache = EncodingCache(tmp_path, "base|512|77", dtype=torch.bfloat16)
    first = cache.get("txt:a fox", compute)["x"]
    again = cache.get("txt:a fox", compute)["x"]
    assert calls == [1] and len(cache) == 1
    assert first.dtype == again.dtype == torch.bfloat16
    assert torch.equal(first, (torch.arange(6.0).view(2, 3) / 3).to(torch.bfloat16))
    path = cache.path("txt:a fox")
    assert backed_by(first, path) and backed_by(again, path)  # the file's pages, not a copy in RAM


def test_another_dtype_is_another_entry(tmp_path):
    compute = lambda: {"x": torch.ones(2)}  # noqa: E731
    EncodingCache(tmp_path, "ctx", dtype=torch.bfloat16).get("k", compute)
    assert EncodingCache(tmp_path, "ctx", dtype=torch.float32).get("k", compute)["x"].dtype == torch.float32
    assert len(EncodingCache(tmp_path, "ctx")) == 2


def test_a_corrupt_entry_names_the_file_and_the_fix(tmp_path):
    cache = EncodingCache(tmp_path, "ctx")
    cache.get("k", lambda: {"x": torch.ones(2)})
    cache.path("k").write_bytes(b"not a safetensors file")
    with pytest.raises(CacheError, match=r"is corrupt .*delete it to re-encode"):
        cache.get("k", lambda: {"x": torch.ones(2)})
