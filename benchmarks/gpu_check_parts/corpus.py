"""The images the GPU check trains on: the shards of ``--data`` or a corpus made with ``vlp-data photos``,
and, for open_clip's trainer (which cannot read these webdataset shards), the same JPEGs extracted to
files and listed in a CSV of exactly the rows its run needs.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tarfile
from pathlib import Path

from .base import BIN, IMAGE_EXTENSIONS, REPO, CheckError


def shard_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def make_corpus(args: argparse.Namespace, out: Path, timeout: float, bin_dir: Path = BIN) -> dict:
    """A corpus made with ``vlp-data photos`` (from ``bin_dir``); a clear error where this checkout lacks the
    command."""
    exe = str(bin_dir / "vlp-data")
    probe = subprocess.run([exe, "photos", "--help"], capture_output=True, text=True, cwd=REPO)
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        raise CheckError(
            f"`vlp-data photos` is not available in this checkout ({said[-1] if said else 'no output'}): "
            "pass --data DIR, a directory of webdataset shards holding JPEG images and .txt captions"
        )
    cmd = [exe, "photos", "--out", str(out), "--n", str(args.corpus_n), "--size", args.corpus_size]
    if "--shard-size" in probe.stdout:
        # at least two shards per loader worker, so that no worker idles
        cmd += ["--shard-size", str(max(1, args.corpus_n // (2 * max(1, args.workers))))]
    if "--workers" in probe.stdout:
        cmd += ["--workers", str(min(16, os.cpu_count() or 1))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if proc.returncode != 0:
        raise CheckError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return {"created_with": " ".join(cmd[1:])}


def csv_from_shards(shards: list[Path], out: Path, rows_needed: int) -> tuple[Path, int]:
    """The shards' images as files and a CSV (filepath, title) of exactly ``rows_needed`` rows (repeated)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    for shard in shards:
        with tarfile.open(shard) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for name in sorted(members):
                stem, _, ext = name.rpartition(".")
                if ext.lower() not in IMAGE_EXTENSIONS or stem + ".txt" not in members:
                    continue
                path = images / f"{shard.stem}__{name.replace('/', '_')}"
                path.write_bytes(tf.extractfile(members[name]).read())
                rows.append((str(path), tf.extractfile(members[stem + ".txt"]).read().decode().strip()))
    if not rows:
        raise CheckError(f"no image + .txt samples in {len(shards)} shard(s)")
    distinct = len(rows)
    table = out / "train.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows(rows[i % distinct] for i in range(rows_needed))
    return table, distinct
