"""Training throughput: vlp's trainer against open_clip's own trainer, one CPU process, same everything.

Same tiny model (configs/models/vlp-tiny.json, 17M parameters, 64 px), same samples (a shapes world),
same batch, same transforms, one process, one loader worker, at equal precision (fp32 and bf16).

open_clip's trainer 3.3 cannot read webdataset shards with webdataset >= 0.2.96 (``KeyError: 'fname'``
in its tar grouping), so it reads the same samples as a CSV of PNG files (``--dataset-type csv``);
vlp reads them from shards. Both decode PNGs, so the data path costs about the same.

Usage: python benchmarks/train_throughput.py [--steps 40] [--json FILE]
Reports samples/s as the median over steps after a warm-up, best of --repeats alternating runs;
``ratio`` = ours / open_clip.
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/train_throughput.py --steps 6 --batch-size 8 --precisions fp32 --repeats 1 \
      --json /tmp/train_throughput.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _machine import report

from data_pipelines.sources.shapes import WorldConfig, generate_world

REPO = Path(__file__).resolve().parents[1]
ARCH = REPO / "configs" / "models" / "vlp-tiny.json"
BIN = Path(sys.executable).parent
PRECISIONS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "amp_bf16")}  # ours, open_clip's


def _csv_from_shards(train_dir: Path, out: Path) -> Path:
    images = out / "images"
    images.mkdir(parents=True)
    rows = []
    for shard in sorted(train_dir.glob("*.tar")):
        with tarfile.open(shard) as tf:
            members = {m.name: m for m in tf.getmembers()}
            for name in sorted(members):
                key, _, ext = name.partition(".")  # webdataset's split: the key ends at the first dot
                if ext == "png":  # the sample's own image (not, e.g., a twin's neighbour.png)
                    (images / name).write_bytes(tf.extractfile(members[name]).read())
                    caption = tf.extractfile(members[key + ".txt"]).read().decode()
                    rows.append((str(images / name), caption))
    table_path = out / "train.csv"
    with open(table_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    return table_path


def _median_after_warmup(rates: list[float], warmup: int) -> float:
    steady = rates[warmup:] or rates
    return statistics.median(steady)


def run_ours(train_dir: Path, work: Path, precision: str, steps: int, batch: int) -> float:
    out = work / f"ours_{precision}"
    cmd = [
        str(BIN / "vlp-train"),
        f"output_dir={out}",
        f"data.train={train_dir}",
        f"model.name={ARCH}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        f"train.precision={precision}",
        "train.log_every=1",
        f"train.save_every={steps}",
        "data.workers=1",
        "train.warmup_steps=5",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    rates = [json.loads(line)["samples_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return _median_after_warmup(rates, warmup=5)


def run_open_clip(table_path: Path, work: Path, precision: str, steps: int, batch: int) -> float:
    logs = work / f"open_clip_{precision}"
    work.mkdir(parents=True, exist_ok=True)
    # open_clip's trainer only knows registered model names: register ours in its process.
    launcher = (
        "import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
        "from open_clip_train.main import main; main(sys.argv[2:])"
    )
    cmd = [
        sys.executable,
        "-c",
        launcher,
        str(ARCH),
        "--model",
        ARCH.stem,
        "--train-data",
        str(table_path),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--csv-separator",
        ",",
        "--batch-size",
        str(batch),
        "--epochs",
        "1",
        "--workers",
        "1",
        "--lr",
        "1e-3",
        "--warmup",
        "5",
        "--precision",
        precision,
        "--logs",
        str(logs),
        "--name",
        "bench",
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
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"open_clip's trainer failed:\n{text[-3000:]}")
    rates = [float(x) for x in re.findall(r"Batch \(t\): [0-9.]+, ([0-9.]+)/s,", text)]
    if not rates:
        raise RuntimeError(f"no throughput in open_clip's log:\n{text[-3000:]}")
    return _median_after_warmup(rates[:steps], warmup=5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="training steps per contender")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per contender (best kept)")
    p.add_argument("--json", default="benchmarks/results/train_throughput.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        samples = args.steps * args.batch_size + args.batch_size  # one epoch of open_clip = the steps asked
        # image and caption only: neither trainer reads the twins (hard-negative images) of the world's samples
        world = WorldConfig(train_samples=samples, shard_size=500, twins=False)
        generate_world(work / "shapes", world, log=lambda _: None)
        train_dir = work / "shapes" / "train"
        table_path = _csv_from_shards(train_dir, work / "csv")
        for name in args.precisions.split(","):
            ours_p, theirs_p = PRECISIONS[name]
            # Alternate the contenders and keep each one's best run: this 2-core machine is noisy.
            theirs, ours = [], []
            for r in range(args.repeats):
                print(f"  {name} round {r + 1}: open_clip, then vlp", file=sys.stderr, flush=True)
                theirs.append(run_open_clip(table_path, work / f"r{r}", theirs_p, args.steps, args.batch_size))
                ours.append(run_ours(train_dir, work / f"r{r}", ours_p, args.steps, args.batch_size))
            rows.append(
                {
                    "precision": name,
                    "ours": round(max(ours), 1),
                    "open_clip": round(max(theirs), 1),
                    "ratio": round(max(ours) / max(theirs), 3),
                    "ours_runs": ours,
                    "open_clip_runs": theirs,
                }
            )
    report(
        f"Training samples/s, one CPU process, batch {args.batch_size}, vlp-tiny (17M, 64 px):",
        rows,
        ["precision", "ours", "open_clip", "ratio"],
        args,
        open_clip_data="CSV of PNG files (--dataset-type csv); vlp reads the same samples from shards",
        # the headline figures (fp32 row when present)
        **{k: rows[0][k] for k in ("ours", "open_clip", "ratio")},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
