"""Checkpoint folders on disk: the layout, the collective atomic save, the manifest that verifies them,
pruning and the free-space check (see the package docstring)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator

from ..common.atomic import publish_dir, staging_dir, staging_path

log = logging.getLogger("vlp.checkpoint")

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# A save warns when the checkpoint folder's file system has less free space than the last checkpoint
# took, times this, plus SPACE_SLACK_BYTES (logs and the staging copy of small files).
SPACE_MARGIN = 1.2
SPACE_SLACK_BYTES = 16 * 2**20


class DamagedCheckpoint(Exception):
    """A checkpoint folder that does not match its manifest (or has none to check it against)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the message says what was needed, where, and what is left."""


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- sealing and verifying


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of a file's bytes (hashlib: no extra dependency; about 1 GB/s per core)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's entry to the disk (a folder's fsync makes its renames durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: str | os.PathLike) -> dict:
    """Record every file's size and digest in ``folder/manifest.json``; every file, the manifest and
    every folder are fsynced. Returns the manifest."""
    folder = Path(folder)
    files = {}
    for path in _files(folder):
        fsync_path(path)
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "blake2b": file_digest(path)}
    manifest = {"version": 1, "files": files, "total_bytes": sum(f["size"] for f in files.values())}
    with open(folder / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for sub in sorted({p.parent for p in _files(folder)} | {folder}, key=lambda p: -len(p.parts)):
        fsync_path(sub)
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, UnicodeDecodeError, AttributeError) as exn:
        raise DamagedCheckpoint(f"{path}: unreadable manifest ({exn})") from None
    return manifest


def verify_checkpoint(folder: str | os.PathLike) -> None:
    """Raise :class:`DamagedCheckpoint` naming the first file that is missing, of the wrong size or
    with another digest than the manifest records. A folder without a manifest (sealed by a vlp
    before checkpoints were verified) passes with a warning: nothing can be checked."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        log.warning("%s has no %s (written before checkpoints were verified): not verified", folder, MANIFEST)
        return
    for name, entry in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise DamagedCheckpoint(f"{path} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise DamagedCheckpoint(f"{path} has {size} bytes, the manifest records {entry['size']} (cut short?)")
        if file_digest(path) != entry["blake2b"]:
            raise DamagedCheckpoint(f"{path} does not match its checksum in the manifest (its bytes changed)")


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """What is wrong with a checkpoint, or None when it verifies."""
    try:
        verify_checkpoint(folder)
    except DamagedCheckpoint as exn:
        return str(exn)
    return None


def latest_good_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint that verifies; each newer damaged one is named in a warning."""
    for step, path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint step_%d: %s; falling back to an older one", step, problem)
    return None


def checkpoint_bytes(folder: str | os.PathLike) -> int:
    """A checkpoint's size on disk (from its manifest, else by listing it)."""
    try:
        manifest = read_manifest(folder)
    except DamagedCheckpoint:
        manifest = None
    if manifest is not None and "total_bytes" in manifest:
        return int(manifest["total_bytes"])
    return sum(p.stat().st_size for p in _files(Path(folder)))


# ---------------------------------------------------------------------------- pruning and saving


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int, sealed: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints, but never the newest one that
    verifies (when the newer ones are damaged, it is kept too); returns the deleted ones. ``sealed``:
    a checkpoint this process just hashed into its manifest, known good without reading it again."""
    found = list_checkpoints(output_dir)
    keep = {path for _, path in found[-keep_last:]}
    for _, path in reversed(found):  # usually stops at the newest, just sealed
        if path == sealed or checkpoint_problem(path) is None:
            keep.add(path)
            break
    old = [path for _, path in found if path not in keep]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def space_needed(output_dir: str | os.PathLike) -> int | None:
    """Bytes the next checkpoint probably needs: the newest one's size, with a margin (None before
    the first checkpoint)."""
    found = list_checkpoints(output_dir)
    if not found:
        return None
    return int(checkpoint_bytes(found[-1][1]) * SPACE_MARGIN) + SPACE_SLACK_BYTES


def check_free_space(output_dir: str | os.PathLike, step: int) -> None:
    """Warn when the next checkpoint probably does not fit (called before each save)."""
    needed = space_needed(output_dir)
    if needed is None:
        return
    free = shutil.disk_usage(checkpoint_root(output_dir)).free
    if free < needed:
        log.warning(
            "checkpoint step_%d may not fit: %s free in %s, the last checkpoint took about %s; free some space "
            "(or lower train.keep_last) before the save fails",
            step,
            _mb(free),
            checkpoint_root(output_dir),
            _mb(needed),
        )


def _write_error(exn: BaseException, output_dir: str | os.PathLike, final: Path) -> CheckpointWriteError:
    root = checkpoint_root(output_dir)
    free = shutil.disk_usage(root).free if root.is_dir() else 0
    needed = space_needed(output_dir)
    code = getattr(exn, "errno", None)
    # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected
    # pos", without an errno: a near-empty file system is the evidence then.
    full = code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exn) or free < (needed or 2**20)
    good = [step for step, path in list_checkpoints(output_dir) if path != final]
    left = f"earlier checkpoints are intact (newest: step_{good[-1]})" if good else "no earlier checkpoint exists"
    if full:
        what = f"the disk is full: {_mb(free)} free in {root}, " + (
            f"a checkpoint needs about {_mb(needed)}" if needed else "and this is the run's first checkpoint"
        )
    else:
        what = f"I/O error ({type(exn).__name__}: {exn})"
    return CheckpointWriteError(
        code or errno.EIO,
        f"writing checkpoint {final.name} failed, {what}; the partial folder was removed and {left}; "
        "make room and continue with train.resume=latest",
    )


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, step: int, write: Callable[[Path], None], keep_last: int
) -> Path:
    """Collective: every rank calls it. accelerate saves the model, optimizer and RNG states, then
    ``write(folder)`` runs on every rank (the run's own stateful parts); when all ranks are done the
    main process seals the folder (manifest, fsync, rename) and deletes older checkpoints beyond
    ``keep_last``. Returns the path; raises :class:`CheckpointWriteError` on the rank whose write failed."""
    final = checkpoint_root(output_dir) / f"step_{step}"
    staging = staging_path(final)
    main = accelerator.is_main_process
    if main:
        staging_dir(final)
        check_free_space(output_dir, step)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        write(staging)
    except Exception as exn:  # noqa: BLE001 - any failure to write is reported the same way
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(exn, output_dir, final) from exn
    accelerator.wait_for_everyone()
    if main:
        try:
            write_manifest(staging)
            publish_dir(staging, final)
            fsync_path(final.parent)
        except Exception as exn:  # noqa: BLE001
            shutil.rmtree(staging, ignore_errors=True)
            raise _write_error(exn, output_dir, final) from exn
        prune_checkpoints(output_dir, keep_last, sealed=final)  # each file is hashed once per save
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a vlp checkpoint (no {TRAINER_STATE})")
    return json.loads(path.read_text())
