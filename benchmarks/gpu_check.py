"""The GPU check: vlp's trainer under accelerate (DDP and DeepSpeed ZeRO-2, each with the CPU "fast"
JPEG decoder and the on-device decoder) against open_clip's own trainer, on one GPU, same model, same
images, same batch, bf16.

For each configuration it reports samples/s (median over the steps after a warm-up), MFU, peak memory
and the data_time share (median time blocked on the loader / median step time), and writes
``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.

* FLOPs: 3 x the forward FLOPs of one sample (image + text tower), counted by open_clip's own profiler
  functions (``open_clip_train.profiler.profile_torch*``: torch.utils.flop_counter.FlopCounterMode on a
  batch of one, image at the model's size, text at its context length); the loss is not counted.
* Peak: from the device name (bf16 dense tensor-core TFLOP/s, a small table below) or ``--peak-tflops``;
  an unknown device or the CPU gives MFU null.
* Data: ``--data DIR`` (webdataset shards of JPEG + .txt), or a corpus made with ``vlp-data photos``.
  open_clip's trainer 3.3 cannot read webdataset shards with webdataset >= 0.2.96, so it reads the same
  JPEGs extracted to files, from a CSV (``--dataset-type csv``), repeated to exactly --steps batches.
* data_time: vlp logs the time its loop waits in ``next(loader)``; for open_clip's trainer the same
  wait is measured by wrapping its training DataLoader (its own "Data (t)" also holds the host sync of
  the previous step's log line, so it is kept only as ``data_time_share_logged``).
* Every run has a timeout (its process group is killed) and the whole check a budget (``--budget-s``,
  8 minutes by default): a configuration that does not fit is recorded as skipped, not waited for.

After those, the hot loop (issue: no host sync and no collective beyond the engine's on a step that
neither logs, evaluates nor saves):

* ``hot loop``: vlp ZeRO-2 with one process group initialised over NCCL (DeepSpeed initialises it even
  for one process: the setup that, read against the libraries, crashed before collectives moved to the
  device), logging only at the first and last steps, under ``torch.cuda.set_sync_debug_mode("warn")``:
  every synchronising CUDA call is counted per step and charged to its caller (the engine, the loss,
  the loader or the trainer), and steps/s is measured between the first and the last step's records;
  set against the same rate of the ZeRO-2 run above, which logs (and so syncs) every step.
* ``2 ranks``: where more than one GPU is present, vlp ZeRO-2 on two of them (NCCL across devices).

``--dry-run`` runs the same code on the CPU (GPUs hidden) with the tiny ViT (configs/models/
vlp-tiny-vit.json, 64 px), 4 steps of batch 8 in fp32 and three configurations (vlp DDP with the first
decoder, vlp ZeRO-2 with the last, and open_clip), so that the check is known to work before a GPU is lent.

Usage:
  python benchmarks/gpu_check.py --data /data/photos_shards            # on one GPU (<= 8 minutes)
  python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check        # on the CPU, a few minutes
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The parts live in gpu_check_parts/ beside this file. Run as a script, this folder is already on
# sys.path; loaded some other way (the tests load it from its path), it is added at the end, where it
# shadows nothing.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

from gpu_check_parts import corpus, options  # noqa: E402
from gpu_check_parts.base import BIN, DEFAULT_OUT, REPO, CheckError  # noqa: E402
from gpu_check_parts.corpus import csv_from_shards, shard_paths  # noqa: E402
from gpu_check_parts.flops import count_flops, device_info, peak_tflops  # noqa: E402
from gpu_check_parts.open_clip_runs import measure_open_clip, parse_open_clip_log  # noqa: E402
from gpu_check_parts.plan import decoder_key_exists, plan_runs  # noqa: E402
from gpu_check_parts.report import DEFINITIONS, finish_rows, headline, markdown, settings, write_results  # noqa: E402
from gpu_check_parts.vlp_runs import measure_vlp  # noqa: E402

# What the tests and benchmarks/loader.py use from this script, besides main.
__all__ = [
    "BIN",
    "REPO",
    "CheckError",
    "count_flops",
    "decoder_key_exists",
    "main",
    "make_corpus",
    "parse_args",
    "parse_open_clip_log",
    "peak_tflops",
    "plan_runs",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--help`` shows this script's docstring."""
    return options.parse_args(argv, __doc__)


def make_corpus(args: argparse.Namespace, out: Path, timeout: float) -> dict:
    """``vlp-data photos`` from this module's ``BIN`` (looked up at each call: a test points it elsewhere)."""
    return corpus.make_corpus(args, out, timeout, BIN)


def prepare_data(
    args: argparse.Namespace, work: Path, notes: list[str], left: Callable[[], float], runs: list[dict]
) -> tuple:
    """``(shards_dir, shards, table, data_info)``: the shards to train on (``--data``, or a corpus made in
    ``work``), and the CSV open_clip's trainer reads (None when it is not among the runs)."""
    data_info: dict = {}
    if args.data:
        shards_dir = Path(args.data).resolve()
        data_info["shards"] = str(shards_dir)
    else:
        shards_dir = work / "corpus"
        print(f"  corpus: vlp-data photos --n {args.corpus_n} --size {args.corpus_size}", flush=True)
        tic = time.perf_counter()
        data_info.update(make_corpus(args, shards_dir, timeout=max(10.0, left() * 0.4)))
        data_info["corpus_s"] = round(time.perf_counter() - tic, 1)
        data_info["shards"] = "(made here, not kept)"
    shards = shard_paths(shards_dir)
    if not shards:
        raise CheckError(f"no .tar shards in {shards_dir}")
    data_info["shard_count"] = len(shards)
    if len(shards) < args.workers:
        notes.append(f"{len(shards)} shard(s) for {args.workers} loader workers: some of vlp's workers idle")
    table = None
    if any(r["trainer"] == "open_clip" for r in runs):
        table, distinct = csv_from_shards(shards, work / "csv", args.steps * args.batch_size)
        data_info["samples"] = distinct
        data_info["open_clip_csv_rows"] = args.steps * args.batch_size
    return shards_dir, shards, table, data_info


def measure_all(
    args: argparse.Namespace, runs: list[dict], data: tuple, work: Path, device: dict, env: dict, left: Callable
) -> None:
    """Each run in turn, within its own limit and what is left of the budget; results go into ``runs``."""
    shards_dir, _, table, _ = data
    for i, run in enumerate(runs, 1):
        run["slug"] = f"run{i}_" + re.sub(r"[^a-z0-9]+", "_", run["name"].lower()).strip("_")
        budget = min(args.run_timeout_s, left())
        if left() < 20:  # not enough left to start a run at all
            run.update(status="skipped: budget spent")
            print(f"  [{i}/{len(runs)}] {run['name']}: skipped (budget spent)", flush=True)
            continue
        print(f"  [{i}/{len(runs)}] {run['name']} (limit {budget:.0f} s) ...", end=" ", flush=True)
        if run["trainer"] == "vlp":
            run.update(measure_vlp(args, run, shards_dir, work, device["kind"], env, budget))
        else:
            run.update(measure_open_clip(args, run, table, work, env, budget))
        if run["status"] == "ok":
            print(
                f"{run['samples_per_s']:.1f} samples/s, data_time share {run['data_time_share']:.2f}, "
                f"peak {run['peak_memory_mb']:.0f} MB, {run['wall_s']:.0f} s",
                flush=True,
            )
        else:
            print(run["status"], flush=True)
            print("    " + run.get("log_tail", "").replace("\n", "\n    ")[-1500:], flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) if args.dry_run else DEFAULT_OUT)
    )
    notes: list[str] = []
    env = dict(os.environ)
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same code on the CPU, even where a GPU is present
    from _machine import machine  # beside this script (on sys.path, above): imports torch, so only here

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    try:
        runs = plan_runs(args, notes)
        device = device_info(args)
        if device["peak_tflops"] is None:
            notes.append(device["peak_source"])
        print(f"gpu_check: {device['name']}, {len(runs)} configurations, budget {args.budget_s:.0f} s", flush=True)
        flops = count_flops(args.model)
        print(
            f"  FLOPs/sample: {flops['forward_gflops']} G forward "
            f"({flops['image_forward_gflops']} image + {flops['text_forward_gflops']} text), x3 = "
            f"{flops['train_gflops_per_sample']} G trained",
            flush=True,
        )
        work_ctx = tempfile.TemporaryDirectory(prefix="gpu_check_")
        work = Path(work_ctx.name)
        if args.keep_work:
            work_ctx = None
            work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
            notes.append(f"work folder kept: {work}")
        data = prepare_data(args, work, notes, left, runs)
        measure_all(args, runs, data, work, device, env, left)
        finish_rows(runs, flops, device)
        result = {
            "machine": machine(),
            "dry_run": args.dry_run,
            "device": device,
            "flops": flops,
            "settings": settings(args, flops),
            "definitions": DEFINITIONS,
            "data": data[3],
            "notes": notes,
            "headline": headline(runs),
            "runs": [{k: v for k, v in r.items() if k != "slug"} for r in runs],
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        write_results(out, result)
        if work_ctx is not None:
            work_ctx.cleanup()
    except CheckError as exn:
        print(f"gpu_check: {exn}", file=sys.stderr)
        return 2
    print()
    print(markdown(result))
    print(f"written {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {result['elapsed_s']:.0f} s")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
