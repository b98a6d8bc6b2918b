"""Peak memory and time of one ProtoCLIP K-means clustering at the CC3M recipe's sizes (one CPU process).

The sizes come from configs/protoclip_rn50_cc3m.yaml: a rank clusters the episode it replayed,
``objective.proto.episode_steps`` batches of ``train.batch_size`` (per GPU) = 390 × 64 = 24,960
points (the authors' 200k-sample episode over 8 GPUs), into ``objective.proto.clusters`` = 20,000
clusters, in the heads' ``objective.proto.dim`` = 128-d projection space (the optional external
teacher's captions are clustered in MiniLM's 384-d space: ``--dim 384``). The points are unit-norm
Gaussian vectors, as the heads' projections are normalised; memory and time do not depend on them.

Two methods, each in a fresh subprocess, from the same seeded start for the same Lloyd iterations
(the recipe runs 20, times 3 restarts, times 2 or 3 clusterings an episode; a few show the cost):
  - chunked fp32 (vlp.protoclip.kmeans.kmeans, now): rows scored in chunks whose rows × K score
    matrix stays under CHUNK_BYTES (64 MiB), ``argmax x·c − ½‖c‖²``;
  - float64 cdist (the code before it, copied below): ``torch.cdist`` of the points cast to float64,
    an N×K float64 matrix each pass (N·K·8 bytes, also given by formula).
The peak is the growth of the subprocess's peak resident set (ru_maxrss) over the clustering, after
torch is imported and the points are made; its absolute peak is shown too (libraries included).
A pass is one Lloyd iteration; the final assignment and inertia make one more, so per pass = wall time /
(iters + 1). ``same labels`` compares the two methods' final labels.

Usage: python benchmarks/kmeans_memory.py [--iters 5] [--dim 384] [--skip-float64] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/kmeans_memory.py --points 2000 --clusters 20 --dim 16 --iters 1 --json /tmp/kmeans_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "protoclip_rn50_cc3m.yaml"
METHODS = {"chunked_fp32": "chunked fp32 (now)", "float64_cdist": "float64 cdist (before)"}
MIB = 2**20


def recipe_sizes(config: Path) -> dict:
    """Points per rank per episode, clusters and projection dim of the recipe."""
    cfg = yaml.safe_load(config.read_text())
    proto = cfg["objective"]["proto"]
    return {
        "points_per_rank": proto["episode_steps"] * cfg["train"]["batch_size"],
        "clusters": proto["clusters"],
        "dim": proto["dim"],
    }


def float64_cdist_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-chunking ``_lloyd`` on one rank (its collectives are identities there): float64 points
    and a full ``torch.cdist`` N×K float64 matrix per pass."""
    g = torch.Generator().manual_seed(seed)
    xd = x.double()
    centroids = xd[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        labels = torch.cdist(xd, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xd)
        sizes = torch.bincount(labels, minlength=k).to(sums.dtype)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = (~filled).nonzero().flatten()
        if len(empty):
            distance = (xd - centroids[labels]).pow(2).sum(1)
            centroids[empty] = xd[distance.topk(len(empty)).indices]
    distances, labels = torch.cdist(xd, centroids).min(1)
    _ = distances.pow(2).sum().item()  # the inertia, as the old code computed it
    return centroids, labels


def worker(method: str, n: int, k: int, dim: int, iters: int, seed: int, labels_out: str) -> None:
    """One clustering in this (fresh) process; prints one JSON line."""
    from vlp.protoclip.kmeans import kmeans

    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    if method == "chunked_fp32":
        _, labels = kmeans(x, k, iters, seed)
    else:
        _, labels = float64_cdist_kmeans(x, k, iters, seed)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(labels, labels_out)
    print(json.dumps({"before_kib": before, "after_kib": after, "wall_s": wall}))


def measure(method: str, sizes: dict, iters: int, seed: int, labels_out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--iters", str(iters), "--seed", str(seed)]
    cmd += ["--points", str(sizes["points_per_rank"]), "--clusters", str(sizes["clusters"]), "--dim", str(sizes["dim"])]
    cmd += ["--labels-out", str(labels_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "method": METHODS[method],
        "peak_growth_mib": round((r["after_kib"] - r["before_kib"]) / 1024, 1),
        "process_peak_mib": round(r["after_kib"] / 1024, 1),
        "wall_s": round(r["wall_s"], 2),
        "s_per_pass": round(r["wall_s"] / (iters + 1), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG), help="the recipe whose sizes are used")
    p.add_argument("--points", type=int, help="points per rank (default: the recipe's)")
    p.add_argument("--clusters", type=int, help="clusters (default: the recipe's)")
    p.add_argument("--dim", type=int, help="feature dim (default: the recipe's projection dim)")
    p.add_argument("--iters", type=int, default=5, help="Lloyd iterations of the one clustering")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-float64", action="store_true", help="give the old method's matrix by formula only")
    p.add_argument("--json", default="benchmarks/results/kmeans_memory.json")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.points, args.clusters, args.dim, args.iters, args.seed, args.labels_out)
        return 0

    from _machine import report

    from vlp.protoclip.kmeans import CHUNK_BYTES

    sizes = recipe_sizes(Path(args.config))
    for key, override in (("points_per_rank", args.points), ("clusters", args.clusters), ("dim", args.dim)):
        if override is not None:
            sizes[key] = override
    n, k = sizes["points_per_rank"], sizes["clusters"]
    matrices = {"chunked_fp32": min(n, max(1, CHUNK_BYTES // (k * 4))) * k * 4, "float64_cdist": n * k * 8}
    overridden = any(v is not None for v in (args.points, args.clusters, args.dim))
    load = os.getloadavg()[0]  # other work on the machine slows the timings (not the memory)
    rows, labels = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            if method == "float64_cdist" and args.skip_float64:
                row = {"method": METHODS[method]}
            else:
                print(f"  {METHODS[method]} ...", file=sys.stderr, flush=True)
                row = measure(method, sizes, args.iters, args.seed, Path(tmp) / f"{method}.pt")
                labels[method] = torch.load(Path(tmp) / f"{method}.pt")
            row["score_matrix_mib"] = round(matrices[method] / MIB, 1)
            rows.append(row)
    same = None
    if len(labels) == 2:
        same = round((labels["chunked_fp32"] == labels["float64_cdist"]).double().mean().item(), 6)
    source = "sizes overridden" if overridden else f"{Path(args.config).name}: episode_steps × per-GPU batch"
    title = (
        f"One K-means clustering: {n:,} points per rank, {k:,} clusters, {sizes['dim']}-d ({source}); "
        f"{args.iters} Lloyd iterations, 1 CPU process.\nMiB: peak resident-set growth over the clustering "
        "(process_peak: the whole process); score_matrix: the largest distance/score matrix held at once."
    )
    del args.worker, args.labels_out  # not settings
    config = Path(args.config).resolve()
    args.config = str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config)
    columns = ["method", "peak_growth_mib", "process_peak_mib", "score_matrix_mib", "wall_s", "s_per_pass"]
    report(
        title,
        rows,
        columns,
        args,
        **sizes,
        chunk_bytes=CHUNK_BYTES,
        load_average_1min_at_start=round(load, 2),
        same_labels_fraction=same,
        chunked_within_1_gib=rows[0]["peak_growth_mib"] <= 1024,
    )
    if same is not None:
        print(f"final labels equal between the two methods: {same:.4%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
