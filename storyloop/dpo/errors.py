"""The DPO package's user-facing error (the CLI prints it on one line)."""


class DPOError(RuntimeError):
    """A DPO run that cannot start or continue; the message says why and what to do."""
