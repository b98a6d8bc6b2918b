"""Running one configuration's process: a free port for its rendezvous, its own process group with its
output in a log and a hard timeout (the whole group is killed), the log's tail for a failed run, and
the steps kept after the warm-up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict, cwd: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, output to ``log``; on timeout kill the group. (rc, seconds);
    rc None = timed out."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return rc, time.perf_counter() - start


def log_tail(log: Path, chars: int = 2500) -> str:
    """The last ``chars`` of a run's log ("" when it cannot be read), for the report of a failed run."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def steady(values: list[float], warmup: int) -> list[float]:
    """The values after the warm-up (all of them when there is nothing after it)."""
    return values[warmup:] or values
