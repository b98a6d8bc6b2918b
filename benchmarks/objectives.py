"""Step time of each small recipe relative to plain CLIP at the same batch (one CPU process).

Every recipe trains the same model (configs/models/vlp-tiny.json) on the same shapes-world shards at
the same batch for the same number of steps; the figure is the median ``step_time`` after a warm-up,
from each run's metrics.jsonl. What the extra cost buys: negclip/degla encode K = 4 negative captions
per image (5x the text batch), degla also runs the EMA teacher, protoclip replays every episode once
without gradient to cluster it (amortised over the episode in ``mean``).

Usage: python benchmarks/objectives.py [--steps 30] [--batch-size 64] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/objectives.py --steps 6 --batch-size 8 --json /tmp/objectives.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import report

from data_pipelines.sources.shapes import WorldConfig, generate_world

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECIPES = ("clip", "dcl", "negclip", "degla", "protoclip")


def run(recipe: str, train_dir: Path, work: Path, steps: int, batch: int, precision: str) -> list[dict]:
    out = work / recipe
    cmd = [
        str(BIN / "vlp-train"),
        "--config",
        str(REPO / "configs" / f"{recipe}.yaml"),
        f"output_dir={out}",
        "data.shapes_world=",
        f"data.train={train_dir}",
        f"model.name={REPO / 'configs/models/vlp-tiny.json'}",
        f"train.max_steps={steps}",
        f"train.batch_size={batch}",
        f"train.precision={precision}",
        "train.log_every=1",
        f"train.save_every={steps}",
        "data.workers=1",
        "objective.proto.episode_steps=10",
        "eval.zeroshot=[]",  # the recipes' sets are in data/shapes (make demo); the step times do not include them
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{recipe} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="steps per recipe (at least 6: the first 5 are warm-up)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--json", default="benchmarks/results/objectives.json")
    args = p.parse_args(argv)
    if args.steps < 6:
        p.error("--steps: at least 6 (the first 5 steps are left out as warm-up)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_world(
            work / "shapes",
            WorldConfig(train_samples=args.steps * args.batch_size * 2, shard_size=500),
            log=lambda _: None,
        )
        for recipe in RECIPES:
            print(f"  {recipe} ...", file=sys.stderr, flush=True)
            records = run(recipe, work / "shapes" / "train", work, args.steps, args.batch_size, args.precision)
            times = [r["step_time"] for r in records[5:]]
            # the wall time between logged steps includes ProtoCLIP's episode replays
            wall = (records[-1]["time"] - records[4]["time"]) / (len(records) - 5)
            rows.append(
                {"recipe": recipe, "median_step_s": round(statistics.median(times), 4), "mean_step_s": round(wall, 4)}
            )
    base = rows[0]
    for r in rows:
        r["vs_clip_median"] = round(r["median_step_s"] / base["median_step_s"], 2)
        r["vs_clip_mean"] = round(r["mean_step_s"] / base["mean_step_s"], 2)
    report(
        f"Step time per recipe, one CPU process, batch {args.batch_size}, {args.precision}, vlp-tiny:",
        rows,
        ["recipe", "median_step_s", "vs_clip_median", "mean_step_s", "vs_clip_mean"],
        args,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
