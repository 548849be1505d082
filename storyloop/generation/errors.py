"""The error a user can act on when a model cannot be loaded, does not fit, or is asked for wrongly.

Kept free of heavy imports so configs and the CLI can raise it; `storyloop.generation.models`
re-exports it, where most code imports it from.
"""


class ModelError(RuntimeError):
    """A model or LoRA that cannot be loaded or does not fit; the message names it."""


class DrawError(ValueError):
    """Bad input to `storyloop sample` or `storyloop story` (a knob, a --ref, a prompt); the message names it."""
