"""The cells of a study and how one is run: a normal training run (``python -m vlp.train``, one process)
followed by the evaluation of its export; the cell's JSON is written last, atomically, so a cell is done
exactly when its JSON exists. An interrupted cell resumes from its newest checkpoint."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..common.atomic import write_json_atomic
from .spec import Study

START = "start"  # the cell that scores the starting model, untrained


class CellFailed(RuntimeError):
    """A cell's training or evaluation failed; the message names the cell and its log."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while a cell was running; the trainer saved a checkpoint to resume from."""


@dataclass(frozen=True)
class Cell:
    recipe: str
    seed: int | None
    value: object = None  # the varied setting's value (None when the study varies nothing)

    @property
    def name(self) -> str:
        if self.recipe == START:
            return START
        vary = "" if self.value is None else f"__{self.value}"
        return f"{self.recipe}{vary}__seed{self.seed}"


def cells_of(study: Study) -> list[Cell]:
    """Every cell in run order: the starting model first, then seed by seed (so a study cut short has
    all recipes at the first seeds rather than one recipe at all seeds)."""
    cells = [Cell(START, None)] if study.evaluate.start else []
    for seed in study.seeds:
        for value in study.vary_values:
            cells.extend(Cell(r.name, seed, value) for r in study.recipes)
    return cells


def result_path(study: Study, cell: Cell) -> Path:
    return Path(study.results) / "cells" / f"{cell.name}.json"


@dataclass
class Claim:
    """A cell taken by this process: ``cells/NAME.running`` (holding the pid, for people reading the
    folder), open and under an exclusive ``flock`` for as long as the cell runs."""

    path: Path
    file: IO[str]

    def release(self) -> None:
        """Remove the file while still holding it (a process that opened it meanwhile sees that its
        inode is gone and tries again), then let go of it. The cell's trainer, which inherits the open
        file, holds the lock until it exits too."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.file.close()


def claim(study: Study, cell: Cell) -> Claim | None:
    """Take the cell for this process, so that several ``vlp-study`` processes share a study, each on
    its own cells; None when another process holds it. The lock lives in the open file, which this
    process and the cell's trainer hold (``train_cell(keep_open=...)``): the kernel drops it when both
    have ended, however they end (kill -9 included), so no claim goes stale and no reused pid holds a
    cell. Raises OSError naming the file when the file system has no locks (NFS mounted ``nolock``)."""
    path = result_path(study, cell).with_suffix(".running")
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        f = open(path, "a+")  # held open for as long as the cell runs
        try:
            if not _lock(f):
                f.close()
                return None  # another process runs it
            try:  # the holder before us may have released (and removed) the file after we opened it
                ours = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                ours = False
            if ours:
                f.seek(0)
                f.truncate()
                f.write(str(os.getpid()))
                f.flush()
                return Claim(path, f)
        except OSError as exn:
            f.close()
            raise OSError(f"cannot take the claim {path}: {exn} (vlp-study needs a file system with locks)") from exn
        f.close()
    return None


def _lock(f: IO[str], tries: int = 5, wait_s: float = 0.05) -> bool:
    """An exclusive lock on ``f`` if nobody holds the claim. A few short retries: ``held_by`` (``--list``)
    holds a shared lock for an instant, which must not make a free cell look taken."""
    for attempt in range(tries):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(wait_s)
    return False


def held_by(study: Study, cell: Cell) -> int | None:
    """The pid of the process running the cell now (its claim is held), else None."""
    path = result_path(study, cell).with_suffix(".running")
    try:
        f = open(path)
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when nobody holds the claim
            return None
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else -1


def train_command(study: Study, cell: Cell, run_dir: Path) -> list[str]:
    recipe = next(r for r in study.recipes if r.name == cell.recipe)
    zeroshot = ", ".join(study.evaluate.zeroshot.values())
    overrides = [
        f"output_dir={run_dir}",
        f"train.seed={cell.seed}",
        "train.resume=latest",  # an interrupted cell continues exactly where its checkpoint left it
        f"eval.zeroshot=[{zeroshot}]",
        *study.overrides,
        *recipe.overrides,
    ]
    if study.vary_key:
        overrides.append(f"{study.vary_key}={cell.value}")
    return [sys.executable, "-m", "vlp.train", "--config", recipe.config, *overrides]


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step_*"))


def _add_seconds(path: Path, seconds: float) -> None:
    before = float(path.read_text()) if path.is_file() else 0.0
    path.write_text(f"{before + seconds:.3f}")


def train_cell(
    study: Study, cell: Cell, run_dir: Path, log: Callable[[str], None], keep_open: Sequence[int] = ()
) -> float | None:
    """Run the cell's training (resuming when a checkpoint is there); returns its wall seconds over every
    attempt that left checkpoints (an interrupted or failed one adds its time to
    ``run_dir/attempt_seconds``), or what the summary of a finished run found there records (None when
    it records nothing). ``keep_open``: file descriptors the trainer inherits (the cell's claim, so
    that it stays taken while the trainer runs even if this process is killed)."""
    if run_dir.exists() and not _has_checkpoint(run_dir) and not (run_dir / "export").is_dir():
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume, start clean
    if (run_dir / "export").is_dir() and (run_dir / "summary.json").is_file():
        # A finished run already there (a crash after training, or a run placed there by hand): reused;
        # its summary's resolved config is what the cell records.
        return json.loads((run_dir / "summary.json").read_text()).get("seconds")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = train_command(study, cell, run_dir)
    log_path = run_dir.parent / f"{cell.name}.log"
    log(f"  train: {' '.join(cmd[1:])}")
    earlier = run_dir / "attempt_seconds"  # the attempts before this one, which left checkpoints
    start = time.perf_counter()
    finished = False
    try:
        with open(log_path, "a") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, pass_fds=tuple(keep_open))
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                # The trainer got the same Ctrl-C (same process group): it saves a checkpoint and exits.
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise Interrupted(cell.name) from None
        if code == 0 and not (run_dir / "export").is_dir() and _has_checkpoint(run_dir):
            raise Interrupted(cell.name)  # the trainer stopped on a signal sent to it alone: checkpoint, exit 0
        if code != 0 or not (run_dir / "export").is_dir():
            raise CellFailed(f"cell {cell.name}: training exited with {code}; see {log_path}")
        finished = True
    finally:
        if not finished and _has_checkpoint(run_dir):  # the next attempt resumes from this one's work
            _add_seconds(earlier, time.perf_counter() - start)
    seconds = time.perf_counter() - start + (float(earlier.read_text()) if earlier.is_file() else 0.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["seconds"] = seconds
    write_json_atomic(run_dir / "summary.json", summary)
    return seconds


def finish_cell(study: Study, cell: Cell, record: dict, run_dir: Path | None) -> Path:
    """Write the cell's JSON (this marks it done) and drop its checkpoints (the export stays)."""
    path = result_path(study, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    if run_dir is not None:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return path
