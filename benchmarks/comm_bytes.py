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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import report
from comm_formula import PERSISTENCE_THRESHOLD, TARGET, extrapolate, formula, model_facts, target_facts
from comm_runs import BATCH, BIN, REPO, describe, measure

from vlp.common.tables import markdown_table

TINY = REPO / "configs" / "models" / "vlp-tiny-vit.json"
# A mid-size ViT (written at run time): ~3x the tiny one's parameters, to check the formula scales with P.
MID = {
    "embed_dim": 384,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 384, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 384, "heads": 6, "layers": 6},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return args


def plan_runs(counts: list[int], stages: list[int], variants: bool, mid: bool) -> list[dict]:
    """Every stage at every process count; the variants and the mid-size ViT at the fewest ranks."""
    fewest = min(counts)
    runs = [
        {"model": "tiny", "stage": s, "variant": "", "precision": "fp32", "ranks": n} for n in counts for s in stages
    ]
    if variants:
        runs.append({"model": "tiny", "stage": 2, "variant": "r", "precision": "fp32", "ranks": fewest})
        runs += [{"model": "tiny", "stage": s, "variant": "", "precision": "bf16", "ranks": fewest} for s in stages]
    if mid:
        runs += [{"model": "mid", "stage": s, "variant": "", "precision": "fp32", "ranks": fewest} for s in stages if s]
    return runs


def run_label(run: dict) -> str:
    return f"{run['model']} ZeRO-{run['stage']}{run['variant']} {run['precision']} x{run['ranks']}"


def table_row(run: dict, facts: dict, got: dict, fx: dict) -> dict:
    """One run's line: measured megabytes by owner against the formula's."""
    own = got["sent_by_owner"]
    other = sum(v for k, v in own.items() if k not in ("engine", "loss", "trainer"))
    return {
        "model": run["model"],
        "params_m": round(facts["params"] / 1e6, 2),
        "stage": f"ZeRO-{run['stage']}{run['variant']}",
        "precision": run["precision"],
        "ranks": run["ranks"],
        "engine_mb": round(own.get("engine", 0.0) / 1e6, 3),
        "loss_mb": round(own.get("loss", 0.0) / 1e6, 4),
        "trainer_mb": round(own.get("trainer", 0.0) / 1e6, 6),
        "other_mb": round(other / 1e6, 6),
        "measured_mb": round(got["sent_total"] / 1e6, 3),
        "formula_mb": round(fx["total"] / 1e6, 3),
        "ratio": round(got["sent_total"] / fx["total"], 6),
        "engine_ratio": round(own.get("engine", 0.0) / fx["engine"], 6),
        "loss_ratio": round(own.get("loss", 0.0) / fx["loss"], 6),
        "seconds": got["seconds"],
    }


def measure_all(runs: list[dict], steps: int) -> tuple[dict, list[dict], list[dict]]:
    """Writes a small shapes world, runs every run on it; returns the models' facts, the table's rows and
    each run's collectives."""
    rows, details = [], []
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
            print(f"  {run_label(run)} ...", file=sys.stderr, flush=True)
            got = measure(run, work / "shapes" / "train", work, steps)
            low = run["precision"] != "fp32"
            fx = formula(run["stage"], run["variant"], run["ranks"], facts[run["model"]], BATCH, 4, 2 if low else 4)
            rows.append(table_row(run, facts[run["model"]], got, fx))
            kept = ("sent_by_owner", "collectives", "engine_spread", "owner_disagreements", "unseen")
            details.append(
                {
                    **{k: v for k, v in run.items() if k != "model_path"},
                    "formula_bytes": fx,
                    "engine_collectives_mb": describe(got["collectives"], "engine"),
                    "loss_collectives_mb": describe(got["collectives"], "loss"),
                    **{k: got[k] for k in kept},
                }
            )
    return facts, rows, details


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = [int(s) for s in args.stages.split(",")]
    runs = plan_runs([int(r) for r in args.ranks.split(",")], stages, args.variants, args.mid)
    started = time.perf_counter()
    facts, rows, details = measure_all(runs, args.steps)
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
        models=facts,
        mid_architecture=MID,
        persistence_threshold=PERSISTENCE_THRESHOLD,
        conventions="sent per rank in a ring: all_reduce 2(N-1)/N x tensor; all_gather (N-1) x input; "
        "reduce_scatter, all_to_all, scatter, reduce, broadcast (N-1)/N x input; MB = 1e6 bytes",
        runs=details,
        target={**TARGET, **target, "rows": vitb32},
        total_seconds=round(time.perf_counter() - started, 1),
    )
    print("\nThe collectives of each run (kind, dtype, calls and MB sent per rank per step):\n")
    collectives = [
        {"run": run_label(d), "engine": d["engine_collectives_mb"], "loss": d["loss_collectives_mb"]} for d in details
    ]
    print(markdown_table(collectives, ["run", "engine", "loss"]))
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
