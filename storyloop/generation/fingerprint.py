"""Which base model this is: a cheap identity of a FLUX transformer's weights, for LoRAs and caches.

A LoRA records the identity of the base it was trained on, and loaders refuse it on another base;
encoding caches and candidates key on it too. Hashing the whole transformer folder (24 GB for
FLUX.1-dev) in every command on every rank was too slow, so the identity is now

    "weights:<sha256>" over the transformer's config.json (less diffusers' bookkeeping keys: those
    starting with "_", except "_class_name") and, for every tensor of its safetensors weights, the
    name, dtype, shape and a sha256 of its bytes: all of them for a tensor up to 64 KiB (biases,
    norms), else 8 windows of 4 KiB spread evenly from its first byte to its last.

What that guarantees:
- the same weights give the same identity wherever they are: a hub snapshot, a copy of it, and a
  re-sharded or re-saved copy agree (file names, sharding, tensor order and safetensors metadata
  do not count);
- another model is refused: another config, other tensor names, dtypes or shapes, any change to a
  small tensor, and any change that touches a tensor's bytes throughout (a fine-tune, a merged
  LoRA) give another identity;
- what it does not see: a few changed bytes inside a large tensor between the windows (a bit flip
  on disk). That is damage, not another base; `legacy_fingerprint`, the full content hash, does see it.

Its cost is two reads per shard header plus 32 KiB per large tensor (23 MB of 23.8 GB for FLUX.1-dev),
once: the result is memoised on disk per folder (see `Memo`), so a later command, or another rank,
pays a directory listing and one small JSON read.

A hub id is looked up in the local Hugging Face cache without the network; when its transformer is
there, the id gets the identity of those weights (so it agrees with a local copy), else "hub:<id>".
Call it after `load_flux`, which puts the model in the cache.

Older LoRAs recorded "sha256:<sha256_path of the transformer folder>" or "hub:<id>";
`BaseIdentity.accepts` still takes them (computing the full hash only then, memoised).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storyloop.generation.errors import ModelError
from storyloop.hashing import sha256_path
from storyloop.settings import cache_dir

IDENTITY_FORMAT = "storyloop-weights-1"  # change it when what the identity covers changes
WHOLE = 64 * 1024  # tensors up to this many bytes are hashed whole
WINDOWS = 8  # else this many windows of WINDOW bytes, evenly spaced
WINDOW = 4 * 1024
WEIGHTS = "diffusion_pytorch_model.safetensors"  # what diffusers loads without a variant
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header
SETTLE_NS = 50_000_000  # a file changed this recently is not memoised (file clocks tick coarsely)


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or Path(spec).exists() or spec.count("/") != 1


@dataclass(frozen=True)
class BaseIdentity:
    """A base model as loaders check it: what it records, and where its weights lie here."""

    fingerprint: str  # what LoRAs, encoding caches and candidates record
    transformer: Path | None  # the local transformer folder it identifies; None: a hub id not in the cache
    hub_id: str | None = None  # the hub id it was given as, if any

    def accepts(self, recorded: str) -> bool:
        """Whether a LoRA that records `recorded` as its base was made for this model (any format)."""
        if recorded == self.fingerprint:
            return True
        kind, _, value = recorded.partition(":")
        if kind == "sha256" and self.transformer is not None:  # legacy: the full hash of the folder
            return legacy_fingerprint(self.transformer) == recorded
        if kind == "hub":  # legacy, or a hub model that was not in the cache when the LoRA was made
            if value == self.hub_id:
                return True
            folder = hub_transformer(value)
            return folder is not None and weights_fingerprint(folder) == self.fingerprint
        return False


def base_identity(spec: str) -> BaseIdentity:
    """The identity of a model folder (its transformer/) or hub id; see the module's docstring."""
    if looks_like_path(spec):
        folder = Path(spec).expanduser() / "transformer"
        if not folder.is_dir():
            raise ModelError(f"{spec}: no transformer/ folder: not a diffusers FLUX model folder")
        return BaseIdentity(weights_fingerprint(folder), folder)
    folder = hub_transformer(spec)
    if folder is None:
        return BaseIdentity("hub:" + spec, None, spec)
    return BaseIdentity(weights_fingerprint(folder), folder, spec)


def base_fingerprint(spec: str) -> str:
    """What LoRAs, caches and candidates record for this base model."""
    return base_identity(spec).fingerprint


def hub_transformer(repo_id: str) -> Path | None:
    """The transformer folder of a hub model's cached snapshot (revision main), if it is complete here.
    Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "transformer/config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    try:
        return folder if weight_files(folder) else None
    except ModelError:  # a shard not (yet) downloaded
        return None


def weights_fingerprint(folder: Path) -> str:
    """ "weights:<hex>" for a transformer folder with safetensors weights, memoised; else its legacy
    full hash (a folder of .bin weights has no headers to read)."""
    files = weight_files(folder)
    if not files:
        return legacy_fingerprint(folder)
    return Memo(folder).get("weights", lambda: _weights_identity(folder, files))


def legacy_fingerprint(folder: Path) -> str:
    """What base_fingerprint recorded before "weights:": the sha256 of every file in the folder, memoised."""
    return Memo(folder).get("sha256", lambda: "sha256:" + sha256_path(folder))


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files diffusers loads from a transformer folder (the shards of its index, or the
    single file); [] if it has neither."""
    index = folder / f"{WEIGHTS}.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{index}: unreadable shard index ({exc}): download or copy it again") from None
        files = [folder / name for name in names]
        for path in files:
            if not path.is_file():
                raise ModelError(f"{index}: shard {path.name} is missing: download or copy it again")
        return files
    return [folder / WEIGHTS] if (folder / WEIGHTS).is_file() else []


def _weights_identity(folder: Path, files: list[Path]) -> str:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder}: no config.json: not a diffusers transformer folder") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config_path}: not JSON ({exc})") from None
    config = {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
    tensors: dict[str, list] = {}
    for path in files:
        for name, entry in _shard_tensors(path).items():
            if name in tensors:
                raise ModelError(f"{path}: tensor {name} is in two shards of {folder}")
            tensors[name] = entry
    record = {"format": IDENTITY_FORMAT, "config": config, "tensors": sorted([k, *v] for k, v in tensors.items())}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return "weights:" + hashlib.sha256(text.encode()).hexdigest()


def _shard_tensors(path: Path) -> dict[str, list]:
    """name -> [dtype, shape, sampled sha256] for every tensor of one safetensors file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start, header = _read_header(fh, path, size)
        out = {}
        # in file order, so the reads go forward through the file
        for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            out[name] = [entry["dtype"], entry["shape"], _tensor_digest(fh, start + begin, end - begin)]
    return out


def _read_header(fh: BinaryIO, path: Path, size: int) -> tuple[int, dict]:
    """(where tensor data starts, the header's tensors), after checking it describes this file."""
    def bad(why: str) -> ModelError:
        return ModelError(f"{path}: not a readable safetensors file ({why}): download or copy it again")

    raw = fh.read(8)
    if len(raw) < 8:
        raise bad("shorter than a header")
    length = int.from_bytes(raw, "little")
    if length > min(MAX_HEADER, size - 8):
        raise bad(f"header of {length} bytes in a file of {size}")
    try:
        header = json.loads(fh.read(length))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    header.pop("__metadata__", None)  # free-form notes ("format": "pt"), not weights
    start = 8 + length
    for name, entry in header.items():
        try:
            begin, end = entry["data_offsets"]
            ok = isinstance(entry["dtype"], str) and all(isinstance(d, int) for d in entry["shape"]) \
                and 0 <= begin <= end
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"tensor {name} has no dtype, shape and data_offsets")
        if start + end > size:
            raise bad(f"truncated: tensor {name} ends at byte {start + end}, the file has {size}")
    return start, header


def _tensor_digest(fh: BinaryIO, offset: int, nbytes: int) -> str:
    """sha256 of a tensor's bytes if it is small, else of WINDOWS windows spread evenly over it."""
    digest = hashlib.sha256()
    if nbytes <= WHOLE:
        fh.seek(offset)
        digest.update(fh.read(nbytes))
    else:
        for i in range(WINDOWS):
            fh.seek(offset + (nbytes - WINDOW) * i // (WINDOWS - 1))
            digest.update(fh.read(WINDOW))
    return digest.hexdigest()


class Memo:
    """Fingerprints of one folder, remembered on disk while none of its files changed.

    One JSON file per folder under `storyloop.settings.cache_dir()/fingerprints/`, keyed by the
    folder's resolved path and, for every file in it, its size, mtime, ctime and inode: copying,
    replacing or writing any file (even one that keeps its size and mtime) changes the key. As git
    does for its index, files changed within SETTLE_NS of the lookup are not memoised: a write in the
    same tick of the file clock would otherwise leave the key unchanged. It is a
    per-user cache of facts about this machine's files, so it lives in the user's cache dir, not in a
    data dir; deleting it only costs one recomputation. If the cache dir is not writable, nothing is
    remembered and every command computes again. Ranks that race write identical content atomically.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        key = hashlib.sha256(str(self.folder).encode()).hexdigest()[:32]
        self.path = cache_dir() / "fingerprints" / f"{key}.json"

    def state(self) -> list[list]:
        files = sorted(p for p in self.folder.rglob("*") if p.is_file())
        return [[p.relative_to(self.folder).as_posix(), s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]
                for p in files for s in [p.stat()]]

    def get(self, field: str, compute: Callable[[], str]) -> str:
        """The remembered `field`, or compute it and remember it."""
        now = time.time_ns()
        state = self.state()
        entry = self._read()
        if entry.get("folder") != str(self.folder) or entry.get("files") != state:
            entry = {"folder": str(self.folder), "files": state}
        if isinstance(entry.get(field), str):
            return entry[field]
        value = compute()
        settled = all(now - ctime > SETTLE_NS for _, _, _, ctime, _ in state)
        if settled and self.state() == state:  # and nothing changed while we read it
            entry[field] = value
            self._write(entry)
        return value

    def _read(self) -> dict:
        try:
            entry = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return entry if isinstance(entry, dict) else {}

    def _write(self, entry: dict) -> None:
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entry))
            tmp.replace(self.path)  # never a half-written memo under the real name
        except OSError:  # a read-only cache: we only lose the shortcut
            tmp.unlink(missing_ok=True)
