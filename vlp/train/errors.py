"""The trainer's exit codes and the error that ends a run."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # 1: the run failed; 2: a configuration to fix


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what is left on disk."""
