"""Collectives that cannot hang a run: the process group's timeout, each rank's heartbeat, and the
message that names the rank that stopped answering.

gloo's and NCCL's default timeouts are 30 minutes or more, so a stalled rank (a frozen node, a process
stopped by SIGSTOP) used to keep the whole job waiting. The process group now gets
``train.collective_timeout_s``; when a collective fails (timed out, or a peer's connection closed),
the rank that noticed reads every rank's heartbeat to say which one stopped answering, and the run
ends with exit 1. The launcher then ends the other ranks.

A heartbeat is a small JSON file per rank (``OUTPUT/heartbeat/rank<R>.json``: step, time, host, pid)
rewritten by a daemon thread every few seconds. The thread keeps beating while its rank waits inside a
collective (torch releases the GIL there), and stops when the process is stopped or killed. On the
same host the process table says it directly (gone, or stopped).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from ..common.atomic import write_json_atomic

HEARTBEAT_DIR = "heartbeat"
# Words in the errors gloo raises when a peer stops answering or goes away (NCCL raises DistError).
_PEER_FAILURE = (
    "timed out",
    "timeout",
    "connection reset",
    "connection closed",
    "connection refused",
    "broken pipe",
    "end of file",
)


def process_group_timeout(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def set_default_group_timeout(timeout: timedelta) -> None:
    """The timeout of every process group created from now on without one. DeepSpeed builds its
    data-parallel groups with ``new_group(ranks)``, which takes torch's module-level default (30
    minutes for gloo, 10 for NCCL), not the default group's: a rank stalled inside ZeRO's gradient
    all-reduce would hang the job that long (found by tests/test_faults.py)."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    distributed_c10d.default_pg_nccl_timeout = timeout


def is_collective_failure(exn: BaseException) -> bool:
    """An error raised by a collective whose peers did not answer (not a bug in the step)."""
    if isinstance(exn, getattr(dist, "DistError", ())):
        return True
    text = str(exn).lower()
    return isinstance(exn, RuntimeError) and any(word in text for word in _PEER_FAILURE)


# What torch raises when a collective gets a tensor on a device its process group has no backend for
# (a CPU tensor under NCCL): a bug in the caller, not a peer that stopped answering.
_WRONG_DEVICE = "no backend type associated with device type"


def wrong_device(exn: BaseException) -> str | None:
    """The message for a collective handed a tensor on a device its group does not serve, else None."""
    text = str(exn).strip()
    if not (isinstance(exn, RuntimeError) and _WRONG_DEVICE in text.lower()):
        return None
    backend = dist.get_backend_config() if dist.is_available() and dist.is_initialized() else "none"
    return (
        f"a collective was handed a tensor on a device its process group does not serve ({text.splitlines()[0]}; "
        f"the group's backends: {backend}). Under NCCL every collective needs CUDA tensors; host values go "
        "through vlp.collectives.host_group(). This is a bug in vlp or in a hook: please report this line"
    )


def heartbeat_interval(timeout_s: float) -> float:
    """Often enough to tell a silent rank within the timeout, rarely enough to cost nothing."""
    return min(5.0, max(0.5, timeout_s / 10))


def _process_state(pid: int) -> str | None:
    """'gone', 'stopped' or None (running, or not knowable) for a process on this host."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None
    state = stat.rsplit(")", 1)[-1].split()[0]  # the field after the command name
    return {"T": "stopped", "t": "stopped", "Z": "gone", "X": "gone"}.get(state)


class Heartbeat:
    """This rank's heartbeat file, rewritten by a daemon thread; ``explain`` reads everyone's."""

    def __init__(self, output_dir: str | os.PathLike, rank: int, world: int, timeout_s: float):
        self.dir = Path(output_dir) / HEARTBEAT_DIR
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        self.interval = heartbeat_interval(timeout_s)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, rank: int) -> Path:
        return self.dir / f"rank{rank}.json"

    def _beat(self) -> None:
        state = {"rank": self.rank, "step": self.step, "time": time.time(), "host": self.host, "pid": self.pid}
        try:
            write_json_atomic(self._path(self.rank), state)
        except OSError:
            pass  # a full disk must not kill the run from here; the next save reports it

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def start(self) -> None:
        if self.world == 1:
            return  # nobody to wait for
        self.dir.mkdir(parents=True, exist_ok=True)
        self._beat()
        self._thread = threading.Thread(target=self._loop, name="vlp-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _read(self) -> dict[int, dict]:
        found = {}
        for rank in range(self.world):
            try:
                found[rank] = json.loads(self._path(rank).read_text())
            except (OSError, ValueError):
                continue
        return found

    def silent_ranks(self) -> list[str]:
        """Why each other rank is not answering, as far as can be told (empty: all seem alive).
        Waits up to about three heartbeat intervals for a remote rank's heartbeat to move."""
        first = self._read()
        reasons: dict[int, str] = {}
        remote = []
        for rank in range(self.world):
            if rank == self.rank:
                continue
            beat = first.get(rank)
            if beat is None:
                reasons[rank] = f"rank {rank} never wrote a heartbeat"
                continue
            where = f"rank {rank} (pid {beat['pid']} on {beat['host']}, last at step {beat['step']})"
            state = _process_state(beat["pid"]) if beat["host"] == self.host else None
            if state == "gone":
                reasons[rank] = f"{where} has exited"
            elif state == "stopped":
                reasons[rank] = f"{where} is stopped (SIGSTOP or a frozen node)"
            else:
                remote.append(rank)
        if remote:
            time.sleep(3 * self.interval)
            later = self._read()
            now = time.time()
            for rank in remote:
                beat = later.get(rank, first[rank])
                if beat["time"] <= first[rank]["time"]:
                    reasons[rank] = (
                        f"rank {rank} (pid {beat['pid']} on {beat['host']}, last at step {beat['step']}) "
                        f"stopped answering: its last heartbeat is {now - beat['time']:.0f} s old"
                    )
        return [reasons[r] for r in sorted(reasons)]

    def explain(self, exn: BaseException, step: int) -> str:
        """The message for a failed collective at ``step``."""
        first_line = str(exn).strip().splitlines()[0] if str(exn).strip() else type(exn).__name__
        silent = self.silent_ranks()
        who = (
            "; ".join(silent)
            if silent
            else "every other rank still answers: one was busy for longer than "
            f"train.collective_timeout_s={self.timeout_s:g} s (raise it if an export or an evaluation that "
            "runs on one rank takes that long)"
        )
        return (
            f"step {step}: rank {self.rank} gave up waiting for the other ranks "
            f"(train.collective_timeout_s={self.timeout_s:g}; {first_line}); {who}. The newest checkpoint is "
            "kept; continue with train.resume=latest when every node is healthy"
        )
