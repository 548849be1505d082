"""The error every model-loading layer raises, in a module of its own so low layers can share it."""


class ModelError(RuntimeError):
    """A model or LoRA that cannot be loaded or does not fit; the message names it."""
