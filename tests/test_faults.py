"""Faults injected into real runs (`make faults`; about 10 minutes on 2 cores, so not in `make test`):
kill -9 at random moments and during checkpoint writes, damaged checkpoints, a disk that fills during a
save, and a rank that stalls (SIGSTOP) or dies under 2-process DDP and ZeRO-2. Each test asserts the
promised outcome (weights, messages, exit codes, what is left on disk), and each has its own deadline:
a run that hangs is killed and the test fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fault_hooks import environment
from tests.runs import REPO, launch_cmd, max_diff, metrics, train_cmd, weights
from vlp.checkpoint import list_checkpoints, verify_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.faults]

STEPS, SAVE_EVERY = 8, 2


def overrides(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"data.train={shards}",
        "data.workers=0",
        "data.shuffle_buffer=0",
        "train.batch_size=8",
        f"train.max_steps={STEPS}",
        "train.lr=2e-3",
        "train.warmup_steps=2",
        "train.log_every=1",
        f"train.save_every={SAVE_EVERY}",
        "train.keep_last=4",
        "train.threads=1",
        f"model.name={REPO / 'configs/models/vlp-tiny-vit.json'}",
        *extra,
    ]


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """A run in its own process group (so a test can always end all of it)."""
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen, deadline_s: float) -> tuple[int, str, str]:
    """Wait at most ``deadline_s``; a run still alive then is killed and the test fails."""
    try:
        out, err = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run did not end within {deadline_s} s (hung):\n{out[-2000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def wait_for(condition, deadline_s: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def reference(train_shards, tmp_path_factory) -> Path:
    """The uninterrupted single-process run every recovery is compared with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    rc, stdout, stderr = finish(start(train_cmd(overrides(train_shards, out))), 300)
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    return out


def losses(out: Path) -> dict[int, float]:
    return {step: r["loss"] for step, r in metrics(out).items()}


# ---------------------------------------------------------------------------- kill -9


def test_kill_9_at_random_moments_and_during_checkpoint_writes_then_resume_matches(reference, train_shards, tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(overrides(train_shards, out, "train.resume=latest"))
    env = environment(step_sleep=0.3)
    rng = random.Random(14)
    partial = out / "checkpoints"
    kills = []
    log = out / "metrics.jsonl"

    def lines() -> int:
        return len(log.read_text().splitlines()) if log.is_file() else 0

    for attempt in range(4):
        begun, steps_before = time.time(), lines()
        proc = start(cmd, env)
        if attempt % 2 == 0:  # the moment this process starts writing a checkpoint folder

            def writing(begun=begun) -> bool:
                return any(p.stat().st_mtime >= begun for p in partial.glob("step_*.partial"))

            wait_for(writing, 120, "a checkpoint write", proc)
            kills.append("during a checkpoint write")
        else:  # anywhere in the run once it is training again
            wait_for(lambda before=steps_before: lines() > before, 120, "a step", proc)
            time.sleep(rng.uniform(0.0, 2.0))
            kills.append("at a random moment")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            break  # finished before the kill landed
    rc, stdout, stderr = finish(start(cmd, env), 300)
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    assert len(kills) == 4
    final = out / f"checkpoints/step_{STEPS}"
    verify_checkpoint(final)
    assert max_diff(weights(final), weights(reference / f"checkpoints/step_{STEPS}")) == 0.0
    assert not list(partial.glob("*.partial"))  # a crashed save's leftovers are removed


# ---------------------------------------------------------------------------- damaged checkpoints


def test_damaged_newest_checkpoints_fall_back_to_the_newest_good_one(reference, train_shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    ckpts = out / "checkpoints"
    cut = ckpts / f"step_{STEPS}" / "optimizer.bin"
    os.truncate(cut, cut.stat().st_size // 2)  # a sealed checkpoint whose file was cut short
    flipped = ckpts / f"step_{STEPS - SAVE_EVERY}" / "model.safetensors"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10  # and one that rotted by one bit
    flipped.write_bytes(bytes(data))

    # A damaged checkpoint named explicitly stops the run, naming the file (exit 1, nothing trained).
    named = train_cmd(overrides(train_shards, out, f"train.resume={cut.parent}"))
    rc, stdout, stderr = finish(start(named), 120)
    assert rc == 1 and f"{cut} has {cut.stat().st_size} bytes" in stderr, stderr[-3000:]
    # vlp-export refuses it the same way.
    proc = subprocess.run(
        [str(Path(named[0]).parent / "vlp-export"), str(cut.parent), "--out", str(tmp_path / "export")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and str(cut) in proc.stderr, proc.stderr
    assert not (tmp_path / "export").exists()

    # resume=latest skips both with a warning naming each, and resumes from the newest good one.
    rc, stdout, stderr = finish(start(train_cmd(overrides(train_shards, out, "train.resume=latest"))), 300)
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    logs = stdout + stderr
    assert f"skipping checkpoint step_{STEPS}: {cut} has" in logs
    assert f"skipping checkpoint step_{STEPS - SAVE_EVERY}: {flipped} does not match its checksum" in logs
    good = STEPS - 2 * SAVE_EVERY
    assert f"resuming from {ckpts / f'step_{good}'} (step {good})" in logs
    redone, ref = losses(out), losses(reference)
    assert all(redone[s] == ref[s] for s in range(good + 1, STEPS + 1))
    for _, path in list_checkpoints(out):
        verify_checkpoint(path)  # the damaged ones were rewritten
    assert max_diff(weights(ckpts / f"step_{STEPS}"), weights(reference / f"checkpoints/step_{STEPS}")) == 0.0


# ---------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted at tmp_path/disk (root only: these machines run tests as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (make faults runs as root on the project's machines)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(mount: Path, megabytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(mount)], check=True)


def test_a_disk_that_fills_during_a_save_stops_every_rank_and_keeps_the_last_checkpoint(train_shards, small_disk):
    out = small_disk / "run"
    # 2-process ZeRO-2: each rank writes its own optimizer partition, so either rank can hit the full disk.
    cmd = launch_cmd("cpu_deepspeed_zero2.yaml", overrides(train_shards, out, "train.collective_timeout_s=60"))
    resize(small_disk, 2048)
    rc, stdout, stderr = finish(start([*cmd, f"train.max_steps={SAVE_EVERY}"]), 400)  # to measure a checkpoint
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    size_mb = sum(p.stat().st_size for p in (out / f"checkpoints/step_{SAVE_EVERY}").rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(out)
    resize(small_disk, int(size_mb * 1.5) + 8)  # room for one checkpoint and the logs, not two

    tic = time.monotonic()
    rc, stdout, stderr = finish(start(cmd), 300)
    took = time.monotonic() - tic
    assert rc == 1, stdout[-2000:] + stderr[-3000:]
    assert f"writing checkpoint step_{2 * SAVE_EVERY} failed, the disk is full" in stderr, stderr[-4000:]
    assert "a checkpoint needs about" in stderr and f"newest: step_{SAVE_EVERY}" in stderr
    assert "may not fit" in stderr  # the warning before the save
    assert "enforce fail" not in stderr, stderr[-4000:]  # torch's raw message is not what the user reads
    assert [s for s, _ in list_checkpoints(out)] == [SAVE_EVERY]
    verify_checkpoint(out / f"checkpoints/step_{SAVE_EVERY}")
    assert not list((out / "checkpoints").glob("*.partial"))  # the half-written folder is gone
    assert took < 200, f"the job took {took:.0f} s to stop"

    resize(small_disk, 2048)  # space is freed: the same command resumes and finishes
    rc, stdout, stderr = finish(start([*cmd, "train.resume=latest"]), 400)
    assert rc == 0, stdout[-2000:] + stderr[-3000:]
    assert f"resuming from {out / f'checkpoints/step_{SAVE_EVERY}'}" in stdout


# ---------------------------------------------------------------------------- stalled and killed ranks


def rank_pid(out: Path, rank: int, min_step: int, proc: subprocess.Popen) -> int:
    """A rank's pid, from its heartbeat, once it has finished ``min_step`` steps."""

    def ready():
        try:
            beat = json.loads((out / "heartbeat" / f"rank{rank}.json").read_text())
        except (OSError, ValueError):
            return None
        return beat["pid"] if beat["step"] >= min_step else None

    return wait_for(ready, 240, f"rank {rank} to reach step {min_step}", proc)


TIMEOUT_S = 20


def kill_ranks(out: Path) -> None:
    """Every rank that wrote a heartbeat, whatever became of the launcher."""
    for beat in (out / "heartbeat").glob("rank*.json"):
        try:
            os.kill(json.loads(beat.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.mark.parametrize("launch", ["cpu_ddp.yaml", "cpu_deepspeed_zero2.yaml"])
@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL"])
def test_a_stalled_or_killed_rank_ends_the_job_naming_it(train_shards, tmp_path, launch, fault):
    out = tmp_path / "run"
    extra = ["train.max_steps=200", "train.save_every=1000", f"train.collective_timeout_s={TIMEOUT_S}"]
    proc = start(launch_cmd(launch, overrides(train_shards, out, *extra)), environment(step_sleep=0.2))
    try:
        pid = rank_pid(out, 1, 2, proc)
        os.kill(pid, getattr(signal, fault))
        tic = time.monotonic()
        # The timeout, then the launcher's grace period before it kills a stopped process (30 s).
        rc, stdout, stderr = finish(proc, TIMEOUT_S + 90)
        took = time.monotonic() - tic
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_ranks(out)  # the launcher starts its ranks in their own sessions
    assert rc != 0
    said = "is stopped (SIGSTOP or a frozen node)" if fault == "SIGSTOP" else "has exited"
    assert f"rank 0 gave up waiting for the other ranks (train.collective_timeout_s={TIMEOUT_S}" in stderr, stderr[
        -4000:
    ]
    assert f"rank 1 (pid {pid} on" in stderr and said in stderr, stderr[-4000:]
    assert "step " in stderr.split("gave up waiting")[0][-40:]
    if fault == "SIGSTOP":
        assert TIMEOUT_S - 2 < took < TIMEOUT_S + 60, took
    else:
        assert took < 30, took  # a dead peer is noticed at once, no timeout to wait for
