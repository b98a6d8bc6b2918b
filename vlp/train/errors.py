"""The error that ends a run (the exit codes are every command's: vlp.common.cli)."""


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what is left on disk."""
