"""Launching the trainer from tests and reading what it wrote (plain helpers; fixtures live in conftest)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch

from vlp.checkpoint import checkpoint_state_dict
from vlp.export import clip_weights

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(launch_config: str, overrides: list[str], processes: int | None = None) -> list[str]:
    """``accelerate launch`` with one of launch/accelerate/*.yaml (and another process count), on a free port."""
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "launch" / "accelerate" / launch_config),
        *(["--num_processes", str(processes)] if processes else []),
        "--main_process_port",
        str(free_port()),
        "-m",
        "vlp.train",
        *overrides,
    ]


def machine_cmds(launch_config: str, overrides: list[str], machines: int = 2) -> list[list[str]]:
    """One ``accelerate launch`` per "machine" (--num_machines, --machine_rank 0..n-1) on 127.0.0.1: the
    standard multinode launcher of launch/slurm.sh, one process per machine."""
    port = str(free_port())
    base = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "launch" / "accelerate" / launch_config)]
    where = ["--num_machines", str(machines), "--num_processes", str(machines), "--main_process_ip", "127.0.0.1"]
    return [
        [*base, *where, "--main_process_port", port, "--machine_rank", str(r), "-m", "vlp.train", *overrides]
        for r in range(machines)
    ]


def train_cmd(overrides: list[str]) -> list[str]:
    """One process, no launcher."""
    return [str(BIN / "vlp-train"), *overrides]


def run(cmd: list[str], timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def run_together(
    cmds: list[list[str]], timeout: int = 300, envs: list[dict[str, str] | None] | None = None
) -> list[subprocess.CompletedProcess]:
    """Independent one-process runs side by side (a 2-core machine runs two at once in the time of one)."""
    envs = envs or [None] * len(cmds)
    procs = [
        subprocess.Popen(c, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, e in zip(cmds, envs, strict=True)
    ]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def metrics(out: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return clip_weights(checkpoint_state_dict(checkpoint))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)
