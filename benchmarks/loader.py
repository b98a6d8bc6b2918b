"""Loader throughput: vlp's streaming loader against its peers, on the same shards, in one run.

Two corpora (``--corpus``):

* ``photos`` (default): real-photograph JPEGs from ``vlp-data photos`` (scikit-image's and
  scikit-learn's photographs; ``pip install 'vlp[bench]'``) at COCO-like 640x480 and at img2dataset's
  256 px, decoded to 224 px for training. Contenders: ``vlp_fast`` (data.decoder=fast, the trainer's
  default: DCT-scaled libjpeg-turbo decode, the crop on the decoded grid, torch's uint8 bilinear
  resize, uint8 batches normalised on the training device), ``vlp_fast_norm`` (the same, paying the
  normalisation on the loader's CPU, as a CPU-only run does), ``vlp_pil`` (data.decoder=pil:
  open_clip's transform exactly) and ``open_clip``: open_clip's own training pipeline as its trainer
  builds it (``open_clip_train.data.get_wds_dataset``: webdataset, ``decode("pilrgb")``, rename,
  ``image_transform(224, is_train=True)``, tokenizer, batched). Reported: images/s (wall clock), and
  images per CPU-second of the whole process tree (``_per_core``: the process and its workers; what
  one fully used core delivers). The ratios are taken per CPU-second: on a shared machine other
  programs slow the wall clock of whichever contender they overlap, not its CPU time
  (``wall_ratio_fast`` is the wall-clock one). The first batch (workers starting, the shuffle buffer
  filling) is not timed.
* ``shapes``: the shapes world's small PNGs at 64 and 224 px, vlp against a plain webdataset pipeline.

Every contender decodes, crops, resizes and tokenizes; all but ``vlp_fast`` also normalise on the
CPU. Runs alternate between contenders and each keeps its median of ``--repeats``. The last line turns
the measured rate into cores per GPU: ViT-B/32 at 224 px needs 3 x its forward FLOPs per trained sample
(open_clip's profiler, as gpu_check.py counts them), and an H200 at 45% of its 989 dense bf16 TFLOP/s
trains that many samples/s.

Usage: python benchmarks/loader.py [--corpus photos|shapes] [--data DIR] [--samples N] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs both):
  python benchmarks/loader.py --photos 128 --samples 32 --batch-size 16 --repeats 1 --json /tmp/loader_jpeg.json
  python benchmarks/loader.py --corpus shapes --world-samples 256 --samples 32 --batch-size 16 --repeats 1 \
      --json /tmp/loader.json
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import psutil
import torch
from _machine import report
from loader_peers import Normalised, count_samples, in_workers, open_clip_pipeline, wds_peer

from data_pipelines.loader import StreamingLoader
from data_pipelines.shards.specs import parse_sources
from data_pipelines.sources.shapes import WorldConfig, generate_world

H200_BF16_TFLOPS, MFU = 989.4, 0.45


def vitb32_train_gflops() -> float:
    """3 x the forward FLOPs of open_clip's ViT-B-32 by open_clip's own profiler (gpu_check.py)."""
    from gpu_check import count_flops

    return count_flops("ViT-B-32")["train_gflops_per_sample"]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and every process under it (the loader's workers),
    those that have ended included (a loader replaces its workers at each epoch)."""
    me = psutil.Process()
    total = 0.0
    for proc in me.children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:  # ended between the listing and the reading: counted once reaped
            continue
        total += times.user + times.system
    # A child reaped between the two readings would count twice (or, read the other way round, not at
    # all); workers end only at an epoch's end, outside the window timed here (--samples < an epoch).
    own = me.cpu_times()
    return total + own.user + own.system + own.children_user + own.children_system


def _timed(batches, limit: int) -> tuple[float, float]:
    """(images/s, images per CPU-second) over ``limit`` samples after the first batch: the start (workers
    forking, imports, the shuffle buffer's first fill) is not timed. The CPU time is that of the whole
    process tree, so it counts every core the pipeline used, its workers included, and not the time
    other programs took on this machine (they slow the wall clock, not this)."""
    batches = iter(batches)
    next(batches)
    seen, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    for batch in batches:
        seen += count_samples(batch)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start), seen / (_cpu_seconds() - cpu)


def _median_rates(contenders: dict, samples: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Alternate the contenders, keep each one's median images/s and images per CPU-second (this
    machine is noisy)."""
    runs = [{name: _timed(make(), samples) for name, make in contenders.items()} for _ in range(repeats)]
    wall = {name: statistics.median(r[name][0] for r in runs) for name in contenders}
    cpu = {name: statistics.median(r[name][1] for r in runs) for name in contenders}
    return wall, cpu


def photos_suite(args, tmp: Path) -> tuple[list[dict], dict]:
    from data_pipelines.sources.photos import PhotosConfig, write_photos

    corpora = {}
    for label, cfg in (
        ("640x480", PhotosConfig(n=args.photos, width=640, height=480)),
        ("256", PhotosConfig(n=args.photos, width=256, height=256, border=True)),
    ):
        if args.data:
            corpora[label] = args.data
            break
        out = tmp / f"photos-{label}"
        write_photos(out, cfg, log=lambda _: None)
        corpora[label] = str(out)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    preprocess = open_clip.image_transform(224, is_train=True)
    rows = []
    for label, data in corpora.items():
        urls = [u for s in parse_sources(data) for u in s.urls]
        for workers in (0, 1, 2):

            def vlp(decoder: str, workers=workers, data=data):
                return StreamingLoader(
                    data,
                    preprocess=preprocess,
                    tokenizer=tokenizer,
                    batch_size=args.batch_size,
                    num_workers=workers,
                    shuffle_buffer=1000,
                    decoder=decoder,
                    worker_nice=0,
                )

            contenders = {
                "vlp_fast": functools.partial(vlp, "fast"),
                "vlp_fast_norm": lambda vlp=vlp: Normalised(vlp("fast")),
                "vlp_pil": functools.partial(vlp, "pil"),
                "open_clip": lambda urls=urls, workers=workers: in_workers(
                    open_clip_pipeline(urls, preprocess, tokenizer, args.batch_size), workers
                ),
            }
            rates, per_core = _median_rates(contenders, args.samples, args.repeats)
            row = {"corpus": label, "workers": workers, **{k: round(v, 1) for k, v in rates.items()}}
            row.update({f"{k}_per_core": round(v, 1) for k, v in per_core.items()})
            for name in ("fast", "fast_norm", "pil"):
                row[f"ratio_{name}"] = round(per_core[f"vlp_{name}"] / per_core["open_clip"], 2)
                row[f"wall_ratio_{name}"] = round(rates[f"vlp_{name}"] / rates["open_clip"], 2)
            rows.append(row)
            print(
                f"  {label}, {workers} workers: "
                + ", ".join(f"{k} {v:.0f}/s ({per_core[k]:.0f} per CPU-s)" for k, v in rates.items()),
                file=sys.stderr,
            )
    gflops = vitb32_train_gflops()
    needed = H200_BF16_TFLOPS * 1e12 * MFU / (gflops * 1e9)
    coco = [r for r in rows if r["corpus"] == rows[0]["corpus"] and r["workers"] == 0][0]
    extra = {
        "vitb32_train_gflops_per_sample": round(gflops, 1),
        "h200_samples_per_s_at_45pct": round(needed),
        "cores_per_gpu": {
            name: round(needed / coco[f"{name}_per_core"], 1)
            for name in ("vlp_fast", "vlp_fast_norm", "vlp_pil", "open_clip")
        },
    }
    return rows, extra


def shapes_suite(args, tmp: Path) -> list[dict]:
    data = args.data
    if data is None:
        data = str(tmp / "shapes" / "train")
        world = WorldConfig(train_samples=args.world_samples, shard_size=250)
        generate_world(tmp / "shapes", world, log=lambda _: None)
    urls = [u for s in parse_sources(data) for u in s.urls]
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    rows = []
    for size in (64, 224):
        preprocess = open_clip.image_transform(size, is_train=True)
        for workers in (0, 1, 2):
            ours = functools.partial(
                StreamingLoader,
                data,
                preprocess=preprocess,
                tokenizer=tokenizer,
                batch_size=args.batch_size,
                num_workers=workers,
                shuffle_buffer=1000,
            )
            peer = functools.partial(wds_peer, urls, preprocess, tokenizer, args.batch_size, workers)
            rates, _ = _median_rates({"vlp": ours, "wds": functools.partial(peer, True)}, args.samples, args.repeats)
            r_read, _ = _timed(peer(False), args.samples * 5)
            rows.append(
                {
                    "image_size": size,
                    "workers": workers,
                    "vlp": round(rates["vlp"], 1),
                    "wds": round(rates["wds"], 1),
                    "ratio": round(rates["vlp"] / rates["wds"], 2),
                    "wds_read": round(r_read, 1),
                }
            )
            print(f"  {size}px, {workers} workers: vlp {rates['vlp']:.0f}/s, wds {rates['wds']:.0f}/s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=("photos", "shapes"), default="photos")
    p.add_argument("--data", default=None, help="shards to read instead of a fresh corpus")
    p.add_argument("--photos", type=int, default=1500, help="samples per photos corpus (when generated)")
    p.add_argument("--world-samples", type=int, default=4000, help="training samples of the shapes world (generated)")
    p.add_argument("--samples", type=int, default=1000, help="samples timed per configuration")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per contender (median kept)")
    p.add_argument("--json", default=None, help="where to write (default benchmarks/results/loader[_jpeg].json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # per core: the loader's own process, like each worker, on one thread
    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus == "shapes":
            args.json = args.json or "benchmarks/results/loader.json"
            rows = shapes_suite(args, Path(tmp))
            columns = ["image_size", "workers", "vlp", "wds", "ratio", "wds_read"]
            report("Loader samples/s (decode + preprocess + tokenize; ratio = vlp / wds):", rows, columns, args)
            return 0
        args.json = args.json or "benchmarks/results/loader_jpeg.json"
        rows, extra = photos_suite(args, Path(tmp))
    columns = ["corpus", "workers", "vlp_fast", "vlp_fast_norm", "vlp_pil", "open_clip", "vlp_fast_per_core"]
    columns += ["vlp_fast_norm_per_core", "open_clip_per_core", "ratio_fast", "ratio_fast_norm", "wall_ratio_fast"]
    report(
        "JPEG loader at 224 px (decode + crop + resize + normalise + tokenize): images/s, images per CPU-second "
        "(_per_core: the process and its workers), ratio = vlp / open_clip per CPU-second:",
        rows,
        columns,
        args,
        **extra,
    )
    print(
        f"ViT-B/32: {extra['vitb32_train_gflops_per_sample']} GFLOP per trained sample; an H200 at 45% of "
        f"{H200_BF16_TFLOPS} TFLOP/s trains {extra['h200_samples_per_s_at_45pct']} samples/s, which takes "
        + ", ".join(f"{v} cores ({k})" for k, v in extra["cores_per_gpu"].items())
        + " at the 640x480 rate per core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
