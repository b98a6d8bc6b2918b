"""Peak memory per rank against the global batch: DDP and DeepSpeed ZeRO-1/2/3, with and without
feature-cached accumulation (2 CPU processes, the tiny ViT CLIP, fp32, clip objective).

On CPU the figure is the peak resident set size of the rank with the most (libraries included: read
differences, not absolutes); on a GPU it would be torch.cuda.max_memory_allocated. Each configuration
trains 3 steps. Accumulation keeps the global batch and divides the micro-batch by ``--accum``.

Usage: python benchmarks/memory.py [--batches 64,256] [--accum 4] [--strategies DDP,ZeRO-1,ZeRO-2,ZeRO-3] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/memory.py --batches 8 --accum 2 --strategies ZeRO-2 --json /tmp/memory.json
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import report

from data_pipelines.sources.shapes import WorldConfig, generate_world

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STRATEGIES = {"DDP": None, "ZeRO-1": "zero1.json", "ZeRO-2": "zero2.json", "ZeRO-3": "zero3.json"}


def launch_config(strategy: str, folder: Path) -> Path:
    if STRATEGIES[strategy] is None:
        return REPO / "launch" / "accelerate" / "cpu_ddp.yaml"
    path = folder / f"{strategy}.yaml"
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {REPO / 'launch' / 'deepspeed' / STRATEGIES[strategy]}\n"
        "  zero3_init_flag: false\nuse_cpu: true\nnum_machines: 1\nnum_processes: 2\nmachine_rank: 0\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak(strategy: str, global_batch: int, accum: int, train: Path, work: Path) -> float | str:
    out = work / f"{strategy}_{global_batch}_{accum}"
    micro = global_batch // (2 * accum)
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(launch_config(strategy, work)),
        "--main_process_port",
        str(free_port()),
        "-m",
        "vlp.train",
        f"output_dir={out}",
        f"data.train={train}",
        "data.workers=0",
        f"model.name={REPO / 'configs/models/vlp-tiny-vit.json'}",
        f"train.batch_size={micro}",
        f"train.accum_steps={accum}",
        "train.max_steps=3",
        "train.precision=fp32",
        "train.log_every=1",
        "train.save_every=100",
        "train.threads=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln][-1:]
        return f"failed: {last[0][:60] if last else proc.returncode}"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return round(max(r["peak_memory_mb"] for r in records), 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="64,256", help="global batch sizes")
    p.add_argument("--accum", type=int, default=4, help="micro-batches per step in the accumulated runs")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, of: " + ", ".join(STRATEGIES))
    p.add_argument("--json", default="benchmarks/results/memory.json")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"--strategies: unknown {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_world(work / "shapes", WorldConfig(train_samples=max(batches) * 8, shard_size=200), log=lambda _: None)
        for strategy in strategies:
            for accum in (1, args.accum):
                row = {"strategy": strategy, "accum_steps": accum}
                for g in batches:
                    print(f"  {strategy}, accumulation {accum}, global batch {g} ...", file=sys.stderr, flush=True)
                    row[f"batch_{g}"] = peak(strategy, g, accum, work / "shapes" / "train", work)
                rows.append(row)
    columns = ["strategy", "accum_steps", *[f"batch_{g}" for g in batches]]
    report(
        "Peak memory per rank (MB, the largest rank's resident set on CPU), 2 processes, tiny ViT CLIP:",
        rows,
        columns,
        args,
    )
    plot(rows, batches, Path(args.json).with_suffix(".png"))
    return 0


def plot(rows: list[dict], batches: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ys = [r[f"batch_{g}"] for g in batches]
        if all(isinstance(y, float) for y in ys):
            ax.plot(
                batches,
                ys,
                marker="o",
                linestyle="-" if r["accum_steps"] == 1 else "--",
                label=f"{r['strategy']}, accum {r['accum_steps']}",
            )
    ax.set_xlabel("global batch")
    ax.set_ylabel("peak memory per rank (MB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
