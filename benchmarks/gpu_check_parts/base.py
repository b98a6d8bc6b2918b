"""What every part of the GPU check shares: the repository's and the interpreter's folders, the default
results folder, the image extensions a shard's samples may have, and :class:`CheckError`, the error that
stops the check with a message saying what to do.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # vlp-data and accelerate, from the environment that runs the check
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class CheckError(RuntimeError):
    """The check cannot go on (no corpus, no data); the message says what to do."""
