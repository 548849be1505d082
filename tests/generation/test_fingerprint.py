"""Base-model identity: the same weights agree anywhere, another model is refused, the memo spares re-reading."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from safetensors.torch import load_file, save_file

from storyloop.generation import fingerprint
from storyloop.generation.fingerprint import SETTLE_NS, WINDOW, WINDOWS, base_identity, legacy_fingerprint
from storyloop.generation.lora import check_lora
from storyloop.generation.models import LoraMeta, ModelError
from storyloop.toy.assets import BASE, STAGE1

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def own_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOP_CACHE_DIR", str(tmp_path / "user-cache"))


def settle() -> None:
    """Let just-written files age past the memo's settling time, so it may remember them."""
    time.sleep(SETTLE_NS / 1e9 * 1.2)


def model_copy(root: Path, name: str = "a") -> Path:
    """A model folder holding a copy of the toy base's transformer (the only part the identity reads)."""
    shutil.copytree(BASE / "transformer", root / name / "transformer")
    settle()
    return root / name


def header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        return 8 + length, json.loads(fh.read(length))


def large_tensor(path: Path) -> tuple[int, int]:
    """(file offset, size in bytes) of the first tensor too large to be hashed whole."""
    start, head = header(path)
    begin, end = next(e["data_offsets"] for k, e in head.items()
                      if k != "__metadata__" and e["data_offsets"][1] - e["data_offsets"][0] > fingerprint.WHOLE)
    return start + begin, end - begin


def small_tensor(path: Path) -> int:
    start, head = header(path)
    return start + next(e["data_offsets"][0] for k, e in head.items()
                        if k != "__metadata__" and 0 < e["data_offsets"][1] - e["data_offsets"][0] <= 4096)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def fp(model: Path) -> str:
    return base_identity(str(model)).fingerprint


def test_a_copy_and_a_resharded_copy_of_the_same_weights_agree(tmp_path):
    a, b = model_copy(tmp_path, "a"), model_copy(tmp_path, "b")
    assert fp(a).startswith("weights:") and fp(a) == fp(b)
    # Re-save b's weights as two shards in another tensor order, with an index and other metadata.
    tensors = load_file(b / "transformer" / WEIGHTS)
    names = sorted(tensors, reverse=True)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, b / "transformer" / shard, metadata={"format": "pt", "by": "me"})
    (b / "transformer" / WEIGHTS).unlink()
    (b / "transformer" / f"{WEIGHTS}.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 1}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    config = json.loads((b / "transformer" / "config.json").read_text())
    config["_diffusers_version"] = "9.9.9"  # bookkeeping, not the model
    (b / "transformer" / "config.json").write_text(json.dumps(config))
    assert fp(b) == fp(a)
    assert legacy_fingerprint(b / "transformer") != legacy_fingerprint(a / "transformer")


def _config(folder: Path) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pooled_projection_dim": 33}))


def _small(folder: Path) -> None:
    flip_byte(folder / WEIGHTS, small_tensor(folder / WEIGHTS))


def _first_window(folder: Path) -> None:
    flip_byte(folder / WEIGHTS, large_tensor(folder / WEIGHTS)[0])


def _last_window(folder: Path) -> None:
    offset, nbytes = large_tensor(folder / WEIGHTS)
    flip_byte(folder / WEIGHTS, offset + nbytes - 1)


def _fine_tuned(folder: Path) -> None:
    """Every weight of every tensor nudged, sizes and headers unchanged: what a fine-tune looks like."""
    tensors = load_file(folder / WEIGHTS)
    save_file({k: v * 1.01 for k, v in tensors.items()}, folder / WEIGHTS, metadata={"format": "pt"})


def _one_tensor_fine_tuned(folder: Path) -> None:
    tensors = load_file(folder / WEIGHTS)
    name = max(tensors, key=lambda k: tensors[k].numel())
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def _renamed(folder: Path) -> None:
    tensors = load_file(folder / WEIGHTS)
    name = sorted(tensors)[0]
    tensors[name + "_x"] = tensors.pop(name)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def _float32(folder: Path) -> None:
    tensors = load_file(folder / WEIGHTS)
    save_file({k: v.float() for k, v in tensors.items()}, folder / WEIGHTS, metadata={"format": "pt"})


@pytest.mark.parametrize("change", [_config, _small, _first_window, _last_window, _fine_tuned,
                                    _one_tensor_fine_tuned, _renamed, _float32])
def test_another_model_gets_another_identity(tmp_path, change):
    a, b = model_copy(tmp_path, "a"), model_copy(tmp_path, "b")
    before = fp(b)  # memoised: the change must also invalidate the memo
    change(b / "transformer")
    assert fp(b) != before and fp(b) != fp(a)


def test_a_byte_between_the_sampled_windows_is_the_documented_blind_spot(tmp_path):
    """The guarantee's boundary: damage to a large tensor between windows keeps the identity (only the
    legacy full hash sees it), so the identity reads ~32 KiB of such a tensor, never all of it."""
    a, b = model_copy(tmp_path, "a"), model_copy(tmp_path, "b")
    offset, nbytes = large_tensor(b / "transformer" / WEIGHTS)
    windows = [(nbytes - WINDOW) * i // (WINDOWS - 1) for i in range(WINDOWS)]
    gap = WINDOW + 1
    assert not any(w <= gap < w + WINDOW for w in windows)
    flip_byte(b / "transformer" / WEIGHTS, offset + gap)
    assert fp(b) == fp(a)
    assert legacy_fingerprint(b / "transformer") != legacy_fingerprint(a / "transformer")


def test_the_memo_spares_the_second_call_every_weight_read(tmp_path, monkeypatch):
    reads, full_hashes = [], []
    digest, full = fingerprint._tensor_digest, fingerprint.sha256_path
    monkeypatch.setattr(fingerprint, "_tensor_digest", lambda *a: reads.append(a) or digest(*a))
    monkeypatch.setattr(fingerprint, "sha256_path", lambda p: full_hashes.append(p) or full(p))
    model = model_copy(tmp_path)
    first = fp(model)
    tensors = len(header(model / "transformer" / WEIGHTS)[1]) - 1
    assert len(reads) == tensors
    assert fp(model) == first and len(reads) == tensors  # memoised on disk: nothing read again
    legacy = legacy_fingerprint(model / "transformer")
    assert legacy_fingerprint(model / "transformer") == legacy and len(full_hashes) == 1
    assert legacy == "sha256:" + full(model / "transformer")  # the old format, exactly

    # Rewriting a file with the same bytes and the same mtime still counts as a change (ctime).
    path = model / "transformer" / WEIGHTS
    stat = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fp(model) == first and len(reads) == 2 * tensors


def fake_hub_cache(root: Path, repo: str) -> Path:
    """A Hugging Face cache laid out as huggingface_hub writes it: blobs, a snapshot of symlinks, refs/main."""
    cache = root / "hub"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / rev / "transformer"
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for i, source in enumerate(sorted((BASE / "transformer").iterdir())):
        blob = repo_dir / "blobs" / f"blob{i}"
        shutil.copyfile(source, blob)
        (snapshot / source.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    return cache


def test_a_hub_id_in_the_local_cache_agrees_with_a_folder_of_the_same_weights(tmp_path, monkeypatch):
    cache = fake_hub_cache(tmp_path, "toy-org/toy-flux")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import time
    hub = base_identity("toy-org/toy-flux")
    assert hub.fingerprint == fp(model_copy(tmp_path)) and hub.hub_id == "toy-org/toy-flux"
    missing = base_identity("toy-org/not-downloaded")
    assert (missing.fingerprint, missing.transformer) == ("hub:toy-org/not-downloaded", None)

    # A LoRA recorded as trained on the hub id loads on a local copy of those weights, not on another model.
    assert base_identity(str(tmp_path / "a")).accepts("hub:toy-org/toy-flux")
    other = model_copy(tmp_path, "other")
    _fine_tuned(other / "transformer")
    assert not base_identity(str(other)).accepts("hub:toy-org/toy-flux")
    assert missing.accepts("hub:toy-org/not-downloaded") and not missing.accepts(hub.fingerprint)


def lora_for(folder: Path, base: str) -> Path:
    shutil.copytree(STAGE1, folder)
    meta = LoraMeta.read(folder)
    LoraMeta(meta.kind, base, meta.position_scheme, meta.rank, meta.alpha, meta.steps).dump(folder)
    return folder


def legacy_lora(folder: Path) -> Path:
    """The toy Stage-1 LoRA as older storyloops recorded its base: "sha256:" of the whole transformer folder
    (the committed LoRA, retrained since, records the current format)."""
    from storyloop.generation.fingerprint import legacy_fingerprint

    return lora_for(folder, legacy_fingerprint(BASE / "transformer"))


def test_the_toy_stage1_lora_with_its_legacy_base_record_still_loads(tmp_path):
    lora = legacy_lora(tmp_path / "legacy")
    assert LoraMeta.read(lora).base.startswith("sha256:")
    assert check_lora(lora, base_identity(str(BASE)), "stage1").kind == "stage1"
    assert check_lora(lora, base_identity(str(model_copy(tmp_path))), "stage1").kind == "stage1"
    assert check_lora(STAGE1, base_identity(str(BASE)), "stage1").kind == "stage1"  # the committed one


@pytest.mark.parametrize("record", ["legacy", "weights", "hub"])
def test_a_lora_for_another_base_is_refused_in_one_line(tmp_path, record):
    other = model_copy(tmp_path, "other")
    _one_tensor_fine_tuned(other / "transformer")
    if record == "legacy":
        lora = legacy_lora(tmp_path / "lora")  # "sha256:…" of the toy base
    else:
        base = fp(model_copy(tmp_path)) if record == "weights" else "hub:black-forest-labs/FLUX.1-dev"
        lora = lora_for(tmp_path / "lora", base)
    with pytest.raises(ModelError, match="trained on base") as err:
        check_lora(lora, base_identity(str(other)), "stage1")
    assert "\n" not in str(err.value) and str(lora) in str(err.value)


def test_a_broken_model_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="no transformer/ folder"):
        base_identity(str(tmp_path))
    model = model_copy(tmp_path)
    weights = model / "transformer" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match=f"{weights}: .*truncated"):
        base_identity(str(model))
    weights.unlink()
    index = {"weight_map": {"x": "shard-1.safetensors"}}
    (model / "transformer" / f"{WEIGHTS}.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="shard shard-1.safetensors is missing"):
        base_identity(str(model))
