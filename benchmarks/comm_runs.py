"""One measured run of benchmarks/comm_bytes.py: the DeepSpeed and accelerate configs of a ZeRO stage, a
training launch with benchmarks/comm_audit.py installed, and the audit's records summarised per rank per
step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BATCH = 8  # per rank


# ---------------------------------------------------------------------------------------------- configs


def deepspeed_config(stage: int, precision: str, variant: str) -> dict:
    """The run's DeepSpeed JSON: the repo's CPU configs for ZeRO-2/3, launch/deepspeed/zero1.json's
    pattern with stage 0 for ZeRO-0; ``r``: use_multi_rank_bucket_allreduce=false; bf16 communicates in
    fp32 as launch/deepspeed/zero2.json and zero3.json do on GPUs."""
    name = {0: "zero1.json", 2: "cpu_zero2.json", 3: "cpu_zero3.json"}[stage]
    cfg = json.loads((REPO / "launch" / "deepspeed" / name).read_text())
    cfg["zero_optimization"]["stage"] = stage
    if variant == "r":
        cfg["zero_optimization"]["use_multi_rank_bucket_allreduce"] = False
    if precision != "fp32":
        cfg["communication_data_type"] = "fp32"
    return cfg


def launch_config(stage: int, precision: str, variant: str, folder: Path) -> Path:
    tag = f"zero{stage}{variant}_{precision}"
    ds = folder / f"{tag}.json"
    ds.write_text(json.dumps(deepspeed_config(stage, precision, variant), indent=1))
    path = folder / f"{tag}.yaml"
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {ds}\n"
        "  zero3_init_flag: false\nuse_cpu: true\nnum_machines: 1\nnum_processes: 2\nmachine_rank: 0\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- runs


def measure(run: dict, train: Path, work: Path, steps: int) -> dict:
    tag = f"{run['model']}_zero{run['stage']}{run['variant']}_{run['precision']}_{run['ranks']}"
    out, audit = work / f"run_{tag}", work / f"audit_{tag}"
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(launch_config(run["stage"], run["precision"], run["variant"], work)),
        "--num_processes",
        str(run["ranks"]),
        "--main_process_port",
        str(free_port()),
        "-m",
        "vlp.train",
        f"output_dir={out}",
        f"data.train={train}",
        "data.shapes_world=",
        "data.workers=0",
        f"model.name={run['model_path']}",
        f"train.batch_size={BATCH}",
        "train.accum_steps=1",  # DeepSpeed ZeRO-0 in fp32 refuses more
        f"train.max_steps={steps}",
        f"train.precision={run['precision']}",
        "train.log_every=1000",  # logs at step 1 and the last only
        "train.save_every=1000",  # saves at the last step only
        "train.threads=1",
        "eval.zeroshot=[]",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "VLP_TRAIN_HOOKS": "benchmarks.comm_audit:CommAudit",
        "VLP_AUDIT_OUT": str(audit),
    }
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    quiet = [str(s) for s in range(2, steps)]  # neither logs nor saves
    ranks = [json.loads((audit / f"rank{r}.json").read_text()) for r in range(run["ranks"])]
    return {**summarise(ranks, quiet), "seconds": round(seconds, 1)}


def summarise(ranks: list[dict], quiet: list[str]) -> dict:
    """Mean over ranks and quiet steps of the bytes sent, by owner and by (owner, kind, dtype)."""
    by_kind: dict[tuple, dict] = {}
    per_step_engine: list[float] = []
    for state in ranks:
        for s in quiet:
            engine = 0.0
            for e in state["steps"].get(s, []):
                key = (e["owner"], e["kind"], e["dtype"])
                acc = by_kind.setdefault(key, {"calls": 0, "in_bytes": 0, "out_bytes": 0, "sent_bytes": 0.0})
                for k in acc:
                    acc[k] += e[k]
                engine += e["sent_bytes"] if e["owner"] == "engine" else 0.0
            per_step_engine.append(engine)
    n = len(ranks) * len(quiet)
    kinds = [
        {"owner": o, "kind": k, "dtype": t, **{f: v / n for f, v in acc.items()}}
        for (o, k, t), acc in sorted(by_kind.items())
    ]
    owners: dict[str, float] = {}
    for e in kinds:
        owners[e["owner"]] = owners.get(e["owner"], 0.0) + e["sent_bytes"]
    return {
        "sent_by_owner": owners,
        "sent_total": sum(owners.values()),
        "collectives": kinds,
        # the engine's bytes differ between quiet steps or ranks when this is above 0
        "engine_spread": (max(per_step_engine) - min(per_step_engine)) / max(max(per_step_engine), 1.0),
        "owner_disagreements": ranks[0]["owner_disagreements"],
        "unseen": {r["rank"]: r["unseen"] for r in ranks if r["unseen"]},
    }


def describe(collectives: list[dict], owner: str) -> str:
    parts = [
        f"{c['kind']} {c['dtype']} {c['calls']:g}x {c['sent_bytes'] / 1e6:.3g}"
        for c in collectives
        if c["owner"] == owner and c["calls"]
    ]
    return "; ".join(parts) or "-"
