"""`package.module:function` plugins: a stage's model swapped for any callable (an OCR engine, a LaMa
inpainter, a VLM behind an API), loaded by name and cached under its code's identity."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

from storyloop.data.models import DataModelError, model_identity

_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_plugin(spec: str) -> bool:
    """`package.module:function`, and not a folder of that name (a hub id has no colon)."""
    return bool(_PLUGIN.fullmatch(spec)) and not Path(spec).exists()


def load_plugin(spec: str, stage: str) -> Callable:
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise DataModelError(f"{stage}: cannot load plugin {spec!r} ({exc})") from None
    if not callable(fn):
        raise DataModelError(f"{stage}: plugin {spec!r} is not callable")
    return fn


def plugin_identity(spec: str, stage: str) -> str:
    """Its name and its module's source, so an edited plugin's results are made anew."""
    fn = load_plugin(spec, stage)
    try:
        source = inspect.getsource(inspect.getmodule(fn))
    except (OSError, TypeError):
        source = ""
    return f"plugin:{spec}:{hashlib.sha256(source.encode()).hexdigest()}"


def identity(spec: str, stage: str) -> str:
    """What cache keys record for a plugin or a model (folder or hub id)."""
    return plugin_identity(spec, stage) if is_plugin(spec) else model_identity(spec)
