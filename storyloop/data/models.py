"""Loading the pipelines' models: a local folder or a hub id, through transformers' Auto classes."""

from __future__ import annotations

from pathlib import Path


class DataModelError(RuntimeError):
    """A model stage could not load or run its model; the message names the stage and the model."""


def model_identity(spec: str) -> str:
    """What cache keys record for a model: a local folder's content hash (memoised per folder), else the
    hub id. A changed model therefore redoes its stage."""
    from storyloop.generation.fingerprint import legacy_fingerprint, looks_like_path

    if looks_like_path(spec):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise DataModelError(f"{spec}: no such model folder")
        return legacy_fingerprint(folder)
    return "hub:" + spec


def pick_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pretrained(loader, spec: str, stage: str, **kwargs):
    """`loader.from_pretrained(spec)` with an error that names the stage, the model and the way out."""
    try:
        return loader.from_pretrained(spec, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataModelError(f"{stage}: cannot load model {spec!r} ({first}); give a local folder or a hub "
                             f"id that is downloaded, or switch the stage off") from None
