"""One vlp configuration of the GPU check: the ``accelerate launch -m vlp.train`` command (demo.yaml with
the check's overrides), its run, and its measures read back from ``metrics.jsonl``: samples/s, data_time
share, peak memory, loader throughput; for the hot loop, steps/s with sparse logging and the sync audit's
counts per quiet step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
from pathlib import Path

from .base import BIN, REPO
from .child_scripts import SYNC_AUDIT
from .processes import free_port, log_tail, run_logged, steady

LAUNCH_CONFIGS = {
    ("ddp", "gpu"): "gpu_ddp.yaml",
    ("zero2", "gpu"): "gpu_zero2.yaml",
    ("ddp", "cpu"): "cpu_ddp.yaml",
    ("zero2", "cpu"): "cpu_deepspeed_zero2.yaml",
}


def vlp_command(args: argparse.Namespace, run: dict, shards: Path, out: Path, device_kind: str) -> list[str]:
    launch = REPO / "launch" / "accelerate" / LAUNCH_CONFIGS[(run["backend"], device_kind)]
    overrides = [
        f"output_dir={out}",
        f"model.name={args.model}",
        f"data.train={shards}",
        "data.shapes_world=",
        f"data.workers={args.workers}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        f"train.warmup_steps={args.warmup}",
        f"train.precision={args.precision}",
        f"train.log_every={10 * args.steps if run.get('audit') else 1}",  # audit: the first and last step only
        f"train.save_every={10 * args.steps}",  # none during the run; the final one is written after the last step
        "train.keep_last=1",
        "eval.zeroshot=[]",
        "eval.every=0",
    ]
    if run["decoder"] is not None:
        overrides.append(f"data.decoder={run['decoder']}")
    overrides += args.vlp_set
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(launch),
        "--num_processes",
        str(run.get("processes", 1)),
        "--main_process_port",
        str(free_port()),
        "-m",
        "vlp.train",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        *overrides,
    ]


def measure_vlp(args, run: dict, shards: Path, work: Path, device_kind: str, env: dict, timeout: float) -> dict:
    out = work / run["slug"]
    cmd = vlp_command(args, run, shards, out, device_kind)
    log = work / f"{run['slug']}.log"
    audit_file = work / f"{run['slug']}_syncs.json"
    if run.get("audit"):
        (work / "gpu_sync_audit.py").write_text(SYNC_AUDIT)
        path = os.pathsep.join(p for p in (str(work), str(REPO), env.get("PYTHONPATH", "")) if p)
        env = {
            **env,
            "PYTHONPATH": path,
            "VLP_TRAIN_HOOKS": "gpu_sync_audit:Audit",
            "VLP_SYNC_AUDIT_OUT": str(audit_file),
        }
    rc, seconds = run_logged(cmd, log, timeout, env, REPO)
    result = {"command": shlex.join(cmd), "wall_s": round(seconds, 1)}
    text = log_tail(log, 10**7)
    reported = re.search(r"^# (.+?), (\d+) process\(es\)", text, re.M)
    if reported:
        result["backend_reported"] = f"{reported.group(1)}, {reported.group(2)} process(es)"
    if rc is None:
        return {**result, "status": f"timed out after {timeout:.0f} s", "log_tail": log_tail(log)}
    if rc != 0:
        return {**result, "status": f"failed (exit {rc})", "log_tail": log_tail(log)}
    metrics = out / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    records = [r for r in records if "samples_per_s" in r]
    if run.get("audit"):
        return {**result, **audit_result(args, records, audit_file, log)}
    if len(records) < args.steps:
        return {**result, "status": f"only {len(records)} of {args.steps} step records", "log_tail": log_tail(log)}
    kept = steady(records, args.warmup)
    data_time = statistics.median(r["data_time"] for r in kept)
    step_time = statistics.median(r["step_time"] for r in kept)

    def median_of(key: str) -> float | None:  # loader figures: absent in older vlp, None before a measure
        values = [r[key] for r in kept if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        **result,
        "status": "ok",
        "steps_measured": len(kept),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in kept),
        "step_time_s": step_time,
        "data_time_s": data_time,
        "data_time_share": min(1.0, data_time / step_time) if step_time > 0 else None,
        "peak_memory_mb": max(r.get("peak_memory_mb") or 0.0 for r in records),
        "loader_images_per_s": median_of("loader_images_per_s"),
        "loader_images_per_core_s": median_of("loader_images_per_core_s"),
        "steps_per_s_wall": steps_per_s(records),
    }


def steps_per_s(records: list[dict]) -> float | None:
    """Steps per second between the first and the last step's records (their wall-clock ``time``):
    what a run with sparse logging can be measured by, and a run that logs every step alike."""
    if len(records) < 2 or records[-1]["time"] <= records[0]["time"]:
        return None
    return (records[-1]["step"] - records[0]["step"]) / (records[-1]["time"] - records[0]["time"])


def audit_result(args: argparse.Namespace, records: list[dict], audit_file: Path, log: Path) -> dict:
    """The hot-loop run: steps/s with logging at the first and last step only, and the synchronising CUDA
    calls per step that neither logs nor saves (2 .. steps-1), by owner."""
    if [r["step"] for r in records] != [1, args.steps]:
        return {"status": f"expected records at steps 1 and {args.steps}", "log_tail": log_tail(log)}
    if not audit_file.exists():
        return {"status": "the sync audit wrote nothing (hook not loaded?)", "log_tail": log_tail(log)}
    audit = json.loads(audit_file.read_text())
    quiet = [str(s) for s in range(2, args.steps)]
    by_owner: dict[str, int] = {}
    for step in quiet:
        for who, n in audit["per_step"].get(step, {}).items():
            by_owner[who] = by_owner.get(who, 0) + n
    return {
        "status": "ok",
        "steps_per_s_wall": steps_per_s(records),
        "samples_per_s": records[-1]["samples_per_s"],
        "peak_memory_mb": max(r.get("peak_memory_mb") or 0.0 for r in records),
        "data_time_share": records[-1]["data_share"],
        "steps_measured": len(quiet),
        "sync_audit": {
            "cuda_sync_debug_mode": audit["cuda"],
            "syncs_per_quiet_step_by_owner": {k: v / len(quiet) for k, v in sorted(by_owner.items())},
            "trainer_syncs_per_quiet_step": by_owner.get("trainer", 0) / len(quiet),
            "trainer_sites": audit["trainer_sites"],
        },
    }
