"""Bytes communicated per rank per optimizer step under DeepSpeed ZeRO-0/2/3: counted on real training
runs of the trainer (2 and 4 CPU processes over gloo), checked against a formula, extrapolated to
ViT-B/32 on 64 GPUs (docs/scaling.md).

Each run trains the tiny ViT CLIP (configs/models/vlp-tiny-vit.json, 13.2M parameters; with --mid also
a mid-size ViT of 40.7M under ZeRO-2 and ZeRO-3) for --steps steps, batch 8 per rank, fp32 (the
variants: bf16), CLIP's loss, with benchmarks/comm_audit.py installed through the trainer's hook seam
(VLP_TRAIN_HOOKS): it records every torch.distributed collective per step with its kind, owner
(engine / loss / trainer) and bytes. Steps 1 (logs) and the last (logs, saves) are left
out; the figures are the mean over the other steps and over ranks of the bytes one rank sends in a ring
(all_reduce 2(N-1)/N x the tensor, all_gather (N-1) x the rank's input, the rest (N-1)/N x the input).

The formula (per rank per step, N ranks, P parameters, b_g / b_p bytes per communicated gradient /
parameter element, B samples per rank, D embedding width, f = (N-1)/N):

  ZeRO-0   gradients all-reduced                          2f P b_g
  ZeRO-2   gradients all-reduced (DeepSpeed 0.19's        2f P b_g + f P b_p
           default use_multi_rank_bucket_allreduce: whole
           buckets, each rank keeps its slice), updated
           parameter slices all-gathered after the step
  ZeRO-2r  the same with use_multi_rank_bucket_allreduce   f P b_g + f P b_p
           = false: a reduce of each slice to its owner
  ZeRO-3   gradients reduce-scattered; every parameter     f P b_g + f P b_p
           all-gathered once per step: the partitioned
           ones in forward (and kept for backward, as
           stage3_max_reuse_distance and max_live_parameters
           are 1e9), the persisted ones (numel <= 1e5, whole
           on every rank) after the optimizer step
  loss     image and text features all-gathered forward    4 (N-1) B D x 4 bytes (fp32 features)
           and scattered back in backward (all_to_all on
           gloo, reduce_scatter on NCCL)

Usage: python benchmarks/comm_bytes.py [--ranks 2,4] [--stages 0,2,3] [--no-variants] [--mid] [--quick]
On 2 shared cores the default (10 runs) takes about 9-10 minutes, --quick (6 runs) about 5, and --mid
adds 2 runs (about 2.5 minutes); benchmarks/results/comm_bytes.json was written with --mid.
Smallest (a check that it runs, one 2-process run, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/comm_bytes.py --quick --ranks 2 --stages 2 --steps 3 --json /tmp/comm_bytes.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import report

from vlp.common.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = REPO / "configs" / "models" / "vlp-tiny-vit.json"
# A mid-size ViT (written at run time): ~3x the tiny one's parameters, to check the formula scales with P.
MID = {
    "embed_dim": 384,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 384, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 384, "heads": 6, "layers": 6},
}
BATCH = 8  # per rank
PERSISTENCE_THRESHOLD = 100_000  # DeepSpeed's default stage3_param_persistence_threshold (and zero3.json's)
# Extrapolation target: ViT-B/32 on 8 nodes x 8 H200, bf16 with fp32 gradient communication.
TARGET = {"model": "ViT-B-32", "ranks": 64, "batch_per_rank": 256, "grad_bytes": 4, "param_bytes": 2}


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


# ---------------------------------------------------------------------------------------------- model


def model_facts(name: str) -> dict:
    """P, the parameters ZeRO-3 keeps whole (numel <= the persistence threshold), and D."""
    from vlp.config import ModelConfig
    from vlp.model import build_model

    model = build_model(ModelConfig(name=name)).model
    params = [p for p in model.parameters() if p.requires_grad]
    clip = getattr(model, "clip", model)  # the open_clip model (the trainer wraps it later)
    dim = clip.text_projection.shape[1]
    return {
        "params": sum(p.numel() for p in params),
        "persisted": sum(p.numel() for p in params if p.numel() <= PERSISTENCE_THRESHOLD),
        "embed_dim": int(dim),
    }


def formula(stage: int, variant: str, n: int, facts: dict, batch: int, grad_bytes: int, param_bytes: int) -> dict:
    """Bytes one rank sends per step (the module's doc): engine (gradients, parameters) and loss."""
    f = (n - 1) / n
    p = facts["params"]
    grads = (1 if stage == 3 or variant == "r" else 2) * f * p * grad_bytes
    params = 0.0 if stage == 0 else f * p * param_bytes
    loss = 4 * (n - 1) * batch * facts["embed_dim"] * 4
    return {"grads": grads, "params": params, "engine": grads + params, "loss": loss, "total": grads + params + loss}


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


# ---------------------------------------------------------------------------------------------- target


def target_facts() -> dict:
    """ViT-B/32 as open_clip builds it (no weights: nothing is downloaded) and its training FLOPs."""
    import open_clip

    model = open_clip.create_model(TARGET["model"])
    params = list(model.parameters())
    return {
        "params": sum(p.numel() for p in params),
        "persisted": sum(p.numel() for p in params if p.numel() <= PERSISTENCE_THRESHOLD),
        "embed_dim": int(model.text_projection.shape[1]),
    }


def extrapolate(facts: dict, stages: list[tuple[int, str]]) -> list[dict]:
    rows = []
    n, b = TARGET["ranks"], TARGET["batch_per_rank"]
    for stage, variant in stages:
        f = formula(stage, variant, n, facts, b, TARGET["grad_bytes"], TARGET["param_bytes"])
        rows.append(
            {
                "stage": f"ZeRO-{stage}{variant}",
                "grads_gb": round(f["grads"] / 1e9, 3),
                "params_gb": round(f["params"] / 1e9, 3),
                "loss_gb": round(f["loss"] / 1e9, 3),
                "total_gb": round(f["total"] / 1e9, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="2,4", help="process counts to measure")
    p.add_argument("--stages", default="0,2,3", help="ZeRO stages to measure at every process count")
    p.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also, at the smallest process count: ZeRO-2 with use_multi_rank_bucket_allreduce=false, "
        "and every stage in bf16 with fp32 communication (the GPU configs' setting)",
    )
    p.add_argument(
        "--mid",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also a mid-size ViT (ZeRO-2/3, fewest ranks)",
    )
    p.add_argument("--steps", type=int, default=5, help="steps per run (the first and the last are left out)")
    p.add_argument("--quick", action="store_true", help="no variants, no mid-size ViT: the --ranks x --stages runs")
    p.add_argument("--json", default="benchmarks/results/comm_bytes.json")
    args = p.parse_args(argv)
    if args.quick:
        args.variants, args.mid = False, False
    counts = [int(r) for r in args.ranks.split(",")]
    stages = [int(s) for s in args.stages.split(",")]
    runs = [
        {"model": "tiny", "stage": s, "variant": "", "precision": "fp32", "ranks": n} for n in counts for s in stages
    ]
    if args.variants:
        runs.append({"model": "tiny", "stage": 2, "variant": "r", "precision": "fp32", "ranks": min(counts)})
        runs += [
            {"model": "tiny", "stage": s, "variant": "", "precision": "bf16", "ranks": min(counts)} for s in stages
        ]
    if args.mid:
        runs += [
            {"model": "mid", "stage": s, "variant": "", "precision": "fp32", "ranks": min(counts)} for s in stages if s
        ]

    rows, details = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "vlp-mid-vit.json").write_text(json.dumps(MID))
        paths = {"tiny": str(TINY), "mid": str(work / "vlp-mid-vit.json")}
        facts = {m: model_facts(paths[m]) for m in sorted({r["model"] for r in runs})}
        print("  writing a shapes world of 800 samples ...", file=sys.stderr, flush=True)
        subprocess.run(
            [str(BIN / "vlp-data"), "shapes", "--out", str(work / "shapes"), "--train-samples", "800"]
            + ["--shard-size", "100", "--workers", "1"],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        for run in runs:
            run["model_path"] = paths[run["model"]]
            label = f"{run['model']} ZeRO-{run['stage']}{run['variant']} {run['precision']} x{run['ranks']}"
            print(f"  {label} ...", file=sys.stderr, flush=True)
            got = measure(run, work / "shapes" / "train", work, args.steps)
            low = run["precision"] != "fp32"
            fx = formula(run["stage"], run["variant"], run["ranks"], facts[run["model"]], BATCH, 4, 2 if low else 4)
            own = got["sent_by_owner"]
            rows.append(
                {
                    "model": run["model"],
                    "params_m": round(facts[run["model"]]["params"] / 1e6, 2),
                    "stage": f"ZeRO-{run['stage']}{run['variant']}",
                    "precision": run["precision"],
                    "ranks": run["ranks"],
                    "engine_mb": round(own.get("engine", 0.0) / 1e6, 3),
                    "loss_mb": round(own.get("loss", 0.0) / 1e6, 4),
                    "trainer_mb": round(own.get("trainer", 0.0) / 1e6, 6),
                    "other_mb": round(
                        sum(v for k, v in own.items() if k not in ("engine", "loss", "trainer")) / 1e6, 6
                    ),
                    "measured_mb": round(got["sent_total"] / 1e6, 3),
                    "formula_mb": round(fx["total"] / 1e6, 3),
                    "ratio": round(got["sent_total"] / fx["total"], 6),
                    "engine_ratio": round(own.get("engine", 0.0) / fx["engine"], 6),
                    "loss_ratio": round(own.get("loss", 0.0) / fx["loss"], 6),
                    "seconds": got["seconds"],
                }
            )
            details.append(
                {
                    **{k: v for k, v in run.items() if k != "model_path"},
                    "formula_bytes": fx,
                    "engine_collectives_mb": describe(got["collectives"], "engine"),
                    "loss_collectives_mb": describe(got["collectives"], "loss"),
                    **{
                        k: got[k]
                        for k in ("sent_by_owner", "collectives", "engine_spread", "owner_disagreements", "unseen")
                    },
                }
            )
        target = target_facts()
    stage_keys = [(s, "") for s in stages] + ([(2, "r")] if args.variants and 2 in stages else [])
    vitb32 = extrapolate(target, stage_keys)
    result = report(
        "Bytes sent per rank per optimizer step (MB = 1e6 bytes; mean over ranks and steps 2..last-1), "
        f"ViT CLIPs, batch {BATCH} per rank, CPU/gloo; formula in the script's doc:",
        rows,
        ["model", "params_m", "stage", "precision", "ranks", "engine_mb", "loss_mb", "trainer_mb", "measured_mb"]
        + ["formula_mb", "ratio", "seconds"],
        args,
        models={m: facts[m] for m in facts},
        mid_architecture=MID,
        persistence_threshold=PERSISTENCE_THRESHOLD,
        conventions="sent per rank in a ring: all_reduce 2(N-1)/N x tensor; all_gather (N-1) x input; "
        "reduce_scatter, all_to_all, scatter, reduce, broadcast (N-1)/N x input; MB = 1e6 bytes",
        runs=details,
        target={**TARGET, **target, "rows": vitb32},
        total_seconds=round(time.perf_counter() - started, 1),
    )
    print("\nThe collectives of each run (kind, dtype, calls and MB sent per rank per step):\n")
    print(
        markdown_table(
            [
                {
                    "run": f"{d['model']} ZeRO-{d['stage']}{d['variant']} {d['precision']} x{d['ranks']}",
                    "engine": d["engine_collectives_mb"],
                    "loss": d["loss_collectives_mb"],
                }
                for d in details
            ],
            ["run", "engine", "loss"],
        )
    )
    print(
        f"\nViT-B/32 ({target['params'] / 1e6:.2f}M parameters, {target['persisted']:,} under the ZeRO-3 persistence "
        f"threshold), {TARGET['ranks']} ranks, batch {TARGET['batch_per_rank']} per rank, bf16 parameters, fp32 "
        "gradient communication, GB sent per rank per step:\n"
    )
    print(markdown_table(vitb32, ["stage", "grads_gb", "params_gb", "loss_gb", "total_gb"]))
    print(f"\n{len(rows)} runs in {result['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
