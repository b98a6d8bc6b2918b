"""The peer: open_clip's own trainer on the same model, images and batch, run through the wrapper of
:mod:`.child_scripts` from a CSV of the shards' JPEGs, its per-step times read from its log lines and its
loader waits and peak memory from the wrapper's record.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

from .child_scripts import OPEN_CLIP_PEER
from .processes import log_tail, run_logged, steady

OPEN_CLIP_STEP = re.compile(r"Data \(t\): ([0-9.]+) Batch \(t\): ([0-9.]+), ([0-9.eE+]+)/s")


def open_clip_command(args: argparse.Namespace, table: Path, logs: Path, record: Path, peer: Path) -> list[str]:
    model = Path(args.model).stem if args.model.endswith(".json") else args.model
    return [
        sys.executable,
        str(peer),
        args.model,
        str(record),
        "--model",
        model,
        "--train-data",
        str(table),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--csv-separator",
        ",",
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",  # the CSV holds exactly --steps batches
        "--workers",
        str(args.workers),
        "--lr",
        "5e-4",
        "--warmup",
        str(args.warmup),
        "--precision",
        "amp_bf16" if args.precision == "bf16" else "fp32",
        "--logs",
        str(logs),
        "--name",
        "gpu_check",
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
        "--zeroshot-frequency",
        "0",
        "--val-frequency",
        "0",
        "--report-to",
        "",
        "--seed",
        "0",
        "--grad-clip-norm",
        "1.0",  # vlp clips at 1.0 by default: the same work
    ]


def parse_open_clip_log(text: str) -> list[dict]:
    """Per-step (data_time, batch_time, samples/s) from open_clip's 'Train Epoch' lines."""
    return [
        {"data_time": float(d), "step_time": float(b), "samples_per_s": float(s)}
        for d, b, s in OPEN_CLIP_STEP.findall(text)
    ]


def measure_open_clip(args, run: dict, table: Path, work: Path, env: dict, timeout: float) -> dict:
    folder = work / run["slug"]
    folder.mkdir(parents=True, exist_ok=True)
    peer = folder / "open_clip_peer.py"
    peer.write_text(OPEN_CLIP_PEER)
    record = folder / "record.json"
    cmd = open_clip_command(args, table, folder / "logs", record, peer)
    log = work / f"{run['slug']}.log"
    rc, seconds = run_logged(cmd, log, timeout, env, folder)
    result = {
        "command": shlex.join(cmd),
        "wall_s": round(seconds, 1),
        "backend_reported": "open_clip_train.main, 1 process",
    }
    if rc is None:
        return {**result, "status": f"timed out after {timeout:.0f} s", "log_tail": log_tail(log)}
    if rc != 0:
        return {**result, "status": f"failed (exit {rc})", "log_tail": log_tail(log)}
    steps = parse_open_clip_log(log.read_text(errors="replace"))[: args.steps]
    if len(steps) < args.steps or not record.exists():
        return {**result, "status": f"only {len(steps)} of {args.steps} step lines", "log_tail": log_tail(log)}
    measured = json.loads(record.read_text())
    waits = steady(measured["loader_wait_s"][: args.steps], args.warmup)
    kept = steady(steps, args.warmup)
    step_time = statistics.median(s["step_time"] for s in kept)
    data_time = statistics.median(waits) if waits else None
    logged = statistics.median(s["data_time"] for s in kept)
    return {
        **result,
        "status": "ok",
        "steps_measured": len(kept),
        "samples_per_s": statistics.median(s["samples_per_s"] for s in kept),
        "step_time_s": step_time,
        "data_time_s": data_time,
        "data_time_share": min(1.0, data_time / step_time) if data_time is not None and step_time > 0 else None,
        "data_time_share_logged": min(1.0, logged / step_time) if step_time > 0 else None,
        "peak_memory_mb": measured["peak_memory_mb"],
        "loader_images_per_s": None,
        "loader_images_per_core_s": None,
    }
