"""Verified checkpoints and the collective watchdog, in-process and fast (the runs with injected
faults are in tests/test_faults.py, `make faults`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlp.checkpoint import (
    MANIFEST,
    TRAINER_STATE,
    DamagedCheckpoint,
    latest_good_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    verify_checkpoint,
    write_manifest,
)
from vlp.config import load_config
from vlp.train.errors import TrainingError
from vlp.train.resume import resolve_resume
from vlp.train.watchdog import Heartbeat, is_collective_failure


def fake_checkpoint(root: Path, step: int, seal: bool = True) -> Path:
    """A checkpoint folder shaped like the trainer's: state, a nested engine folder, a weight file."""
    folder = root / "checkpoints" / f"step_{step}"
    (folder / "pytorch_model").mkdir(parents=True)
    state = {"step": step, "skipped_steps": 0, "world_size": 1, "batch_size": 8, "max_steps": 100}
    (folder / TRAINER_STATE).write_text(json.dumps(state))
    position = {"version": 2, "mode": "split", "seed": 0, "shuffle_buffer": 1000, "epoch": 0, "position": 8 * step}
    (folder / "loader.json").write_text(json.dumps(position))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "pytorch_model" / "mp_rank_00_model_states.pt").write_bytes(b"engine" * 100)
    if seal:
        write_manifest(folder)
    return folder


def flip_a_bit(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_sealed_checkpoint_verifies_and_its_manifest_lists_every_file(tmp_path):
    folder = fake_checkpoint(tmp_path, 4)
    verify_checkpoint(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sorted(manifest["files"]) == [
        "loader.json",
        "model.safetensors",
        "pytorch_model/mp_rank_00_model_states.pt",
        "trainer_state.json",
    ]
    assert manifest["files"]["model.safetensors"]["size"] == 256 * 64
    assert manifest["total_bytes"] == sum(
        p.stat().st_size for p in folder.rglob("*") if p.name != MANIFEST and p.is_file()
    )


@pytest.mark.parametrize(
    "damage, expected",
    [
        (
            lambda f: os.truncate(f / "model.safetensors", 1000),
            r"model\.safetensors has 1000 bytes, the manifest records 16384",
        ),
        (
            lambda f: flip_a_bit(f / "pytorch_model" / "mp_rank_00_model_states.pt"),
            r"mp_rank_00_model_states\.pt does not match its checksum",
        ),
        (lambda f: (f / "model.safetensors").unlink(), r"model\.safetensors is missing"),
        (lambda f: (f / MANIFEST).write_text("{not json"), r"manifest\.json: unreadable manifest"),
    ],
    ids=["truncated", "bit-flipped", "missing", "bad-manifest"],
)
def test_damage_is_named(tmp_path, damage, expected):
    folder = fake_checkpoint(tmp_path, 4)
    damage(folder)
    with pytest.raises(DamagedCheckpoint, match=expected):
        verify_checkpoint(folder)


def test_a_checkpoint_without_manifest_passes_with_a_warning(tmp_path, caplog):
    folder = fake_checkpoint(tmp_path, 4, seal=False)
    with caplog.at_level(logging.WARNING, logger="vlp.checkpoint"):
        verify_checkpoint(folder)
    assert "not verified" in caplog.text


def test_latest_good_checkpoint_skips_damaged_ones_and_names_them(tmp_path, caplog):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    os.truncate(tmp_path / "checkpoints/step_6/model.safetensors", 10)
    flip_a_bit(tmp_path / "checkpoints/step_4/trainer_state.json", 2)
    with caplog.at_level(logging.WARNING, logger="vlp.checkpoint"):
        assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoints/step_2"
    assert "skipping checkpoint step_6" in caplog.text and "has 10 bytes" in caplog.text
    assert "skipping checkpoint step_4" in caplog.text and "trainer_state.json does not match" in caplog.text


def test_pruning_never_deletes_the_newest_good_checkpoint(tmp_path):
    for step in (2, 4, 6, 8):
        fake_checkpoint(tmp_path, step)
    for step in (6, 8):
        os.truncate(tmp_path / f"checkpoints/step_{step}/model.safetensors", 0)
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step_2"]  # step_4 stays: the newer two are damaged
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6, 8]
    fake_checkpoint(tmp_path, 10)  # a good one arrives: step_4 is no longer needed
    assert [p.name for p in prune_checkpoints(tmp_path, keep_last=2)] == ["step_4", "step_6"]


def _config(tmp_path: Path, resume: str):
    return load_config(
        None, [f"output_dir={tmp_path}", "data.train=unused", f"train.resume={resume}", "train.batch_size=8"]
    )


def test_resume_falls_back_and_a_named_damaged_checkpoint_stops_naming_the_file(tmp_path):
    for step in (2, 4):
        fake_checkpoint(tmp_path, step)
    bad = tmp_path / "checkpoints/step_4/model.safetensors"
    flip_a_bit(bad)
    assert resolve_resume(_config(tmp_path, "latest"), world=1) == tmp_path / "checkpoints/step_2"
    with pytest.raises(TrainingError, match=f"damaged: {bad} does not match its checksum"):
        resolve_resume(_config(tmp_path, str(bad.parent)), world=1)
    flip_a_bit(tmp_path / "checkpoints/step_2/model.safetensors")
    with pytest.raises(TrainingError, match="none of the 2 checkpoints"):
        resolve_resume(_config(tmp_path, "latest"), world=1)


class _OneRank:
    """What save_checkpoint asks of accelerate, for one process: it writes one weight file."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, folder: str) -> None:
        (Path(folder) / "model.safetensors").write_bytes(os.urandom(4096))


def test_a_save_hashes_each_file_once(tmp_path, monkeypatch):
    import vlp.checkpoint.disk as checkpoint

    hashed = []
    digest = checkpoint.file_digest
    monkeypatch.setattr(checkpoint, "file_digest", lambda path: hashed.append(Path(path).name) or digest(path))

    def parts(folder: Path) -> None:
        (folder / TRAINER_STATE).write_text(json.dumps({"step": 1}))

    for step in (1, 2, 3):  # the third prunes the first: the sealed one is known good, not read again
        hashed.clear()
        checkpoint.save_checkpoint(_OneRank(), tmp_path, step, parts, keep_last=2)
        assert sorted(hashed) == ["model.safetensors", TRAINER_STATE], (step, hashed)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]


def _resume_on_two_ranks(rank: int, port: int, root: str, resume: str, results) -> None:
    import torch.distributed as dist

    import vlp.checkpoint.disk as checkpoint

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    hashed = []
    digest = checkpoint.file_digest
    checkpoint.file_digest = lambda path: hashed.append(path) or digest(path)
    try:
        got = str(resolve_resume(_config(Path(root), resume), world=1))
    except TrainingError as exn:
        got = f"TrainingError: {exn}"
    results.put((rank, got, len(hashed)))
    dist.destroy_process_group()


@pytest.mark.parametrize("resume", ["latest", "named-damaged"])
def test_at_resume_rank_0_reads_the_checkpoint_and_every_rank_takes_its_verdict(tmp_path, resume):
    import torch.multiprocessing as mp

    from tests.runs import free_port

    for step in (2, 4):
        fake_checkpoint(tmp_path, step)
    flip_a_bit(tmp_path / "checkpoints/step_4/model.safetensors")
    spec = "latest" if resume == "latest" else str(tmp_path / "checkpoints/step_4")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_resume_on_two_ranks, args=(r, port, str(tmp_path), spec, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = {}
    while not results.empty():
        rank, got, hashed = results.get()
        found[rank] = (got, hashed)
    assert set(found) == {0, 1}, found
    assert found[0][0] == found[1][0]  # the same verdict on both ranks
    if resume == "latest":
        assert found[0][0] == str(tmp_path / "checkpoints/step_2")  # past the damaged step_4
    else:
        assert found[0][0].startswith("TrainingError:") and "does not match its checksum" in found[0][0]
    assert found[0][1] > 0 and found[1][1] == 0  # only rank 0 read the bytes


# ---------------------------------------------------------------------------- the collective watchdog


def test_collective_failures_are_told_apart_from_bugs():
    gloo = RuntimeError(
        "[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation to complete"
    )
    reset = RuntimeError("[../gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:4242: Connection reset by peer")
    assert is_collective_failure(gloo) and is_collective_failure(reset)
    assert not is_collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x3 and 4x5)"))
    assert not is_collective_failure(ValueError("Timed out"))


def _beat(folder: Path, rank: int, **fields) -> None:
    (folder / "heartbeat").mkdir(exist_ok=True)
    base = {"rank": rank, "step": 41, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    (folder / "heartbeat" / f"rank{rank}.json").write_text(json.dumps({**base, **fields}))


def test_heartbeat_names_an_exited_a_stopped_and_a_silent_remote_rank(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        time.sleep(0.2)
        _beat(tmp_path, 1, pid=gone.pid)
        _beat(tmp_path, 2, pid=stopped.pid)
        _beat(tmp_path, 3, host="elsewhere", time=time.time() - 30)  # a remote rank whose beats stopped
        _beat(tmp_path, 4, host="elsewhere")  # a remote rank that keeps beating (below)
        me = Heartbeat(tmp_path, rank=0, world=5, timeout_s=5.0)
        keeper = Heartbeat(tmp_path, rank=4, world=5, timeout_s=5.0)
        keeper.host = "elsewhere"
        keeper.start()
        try:
            silent = me.silent_ranks()
        finally:
            keeper.stop()
        assert len(silent) == 3, silent
        assert silent[0].startswith(f"rank 1 (pid {gone.pid}") and silent[0].endswith("has exited")
        assert silent[1].startswith(f"rank 2 (pid {stopped.pid}") and "is stopped" in silent[1]
        assert silent[2].startswith("rank 3 (pid") and "stopped answering: its last heartbeat is 3" in silent[2]
        message = me.explain(RuntimeError("Timed out waiting 5000ms for recv"), step=42)
        assert message.startswith("step 42: rank 0 gave up waiting") and "train.collective_timeout_s=5" in message
    finally:
        stopped.kill()
        stopped.wait()


def test_heartbeat_says_when_every_rank_still_answers(tmp_path):
    me = Heartbeat(tmp_path, rank=0, world=2, timeout_s=5.0)
    other = Heartbeat(tmp_path, rank=1, world=2, timeout_s=5.0)
    other.start()
    try:
        message = me.explain(RuntimeError("Timed out"), step=7)
    finally:
        other.stop()
    assert "every other rank still answers" in message
