"""Loader throughput: our streaming loader against webdataset reading the same shards.

For each image size (64, 224) and worker count (0, 1, 2) it measures samples/s of

* ``vlp``: data_pipelines.loader.StreamingLoader (decode -> open_clip preprocess -> open_clip tokenizer,
  with a 1000-sample shuffle buffer and the per-sample seeding that makes resume exact), split mode;
* ``wds``: a plain webdataset pipeline doing the same work (decode -> same preprocess -> same
  tokenizer -> batch, same shuffle buffer), the usual open_clip-style loader, as the peer;
* ``wds-read``: webdataset reading the raw samples only (no decode), the I/O ceiling.

Usage: python benchmarks/loader.py [--data DIR] [--samples N] [--json FILE]
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
import torch
import webdataset as wds
from _machine import report

from data_pipelines.loader import StreamingLoader
from data_pipelines.shards.specs import parse_sources
from data_pipelines.sources.shapes import WorldConfig, generate_world


def _wds_pipeline(urls, preprocess, tokenizer, batch_size, decode=True):
    def to_pair(sample):
        return preprocess(sample["png"]), sample["txt"]

    def collate(items):
        return {"image": torch.stack([i[0] for i in items]), "text": tokenizer([i[1] for i in items])}

    stages = [wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples()]
    if decode:
        stages.append(wds.shuffle(1000, 100))  # the same buffer as ours
        stages += [wds.decode("pilrgb"), wds.map(to_pair), wds.batched(batch_size, collation_fn=collate)]
    else:
        stages += [wds.batched(batch_size, collation_fn=lambda items: {"n": len(items)})]
    return wds.DataPipeline(*stages)


def _peer(urls, preprocess, tokenizer, batch_size: int, workers: int, decode: bool):
    pipe = _wds_pipeline(urls, preprocess, tokenizer, batch_size, decode)
    if workers == 0:
        return pipe
    return torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=workers)


def _rate(batches, limit: int) -> float:
    seen = 0
    start = time.perf_counter()
    for batch in batches:
        seen += len(batch["key"]) if "key" in batch else batch.get("n", len(batch.get("text", [])))
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="shards to read (default: a fresh 4,000-sample shapes world)")
    p.add_argument("--samples", type=int, default=3000, help="samples timed per configuration")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per contender (median kept)")
    p.add_argument("--json", default="benchmarks/results/loader.json", help="where to write the results")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = str(Path(tmp) / "shapes" / "train")
            generate_world(Path(tmp) / "shapes", WorldConfig(train_samples=4000, shard_size=250), log=lambda _: None)
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
                peer = functools.partial(_peer, urls, preprocess, tokenizer, args.batch_size, workers)

                # Alternate the contenders and keep each one's median: this machine is noisy.
                runs = [(_rate(ours(), args.samples), _rate(peer(True), args.samples)) for _ in range(args.repeats)]
                r_ours = statistics.median(r[0] for r in runs)
                r_wds = statistics.median(r[1] for r in runs)
                r_read = _rate(peer(False), args.samples * 5)
                rows.append(
                    {
                        "image_size": size,
                        "workers": workers,
                        "vlp": round(r_ours, 1),
                        "wds": round(r_wds, 1),
                        "ratio": round(r_ours / r_wds, 2),
                        "wds_read": round(r_read, 1),
                    }
                )
                print(f"  {size}px, {workers} workers: vlp {r_ours:.0f}/s, wds {r_wds:.0f}/s", file=sys.stderr)
    report(
        "Loader samples/s (decode + preprocess + tokenize; ratio = vlp / wds):",
        rows,
        ["image_size", "workers", "vlp", "wds", "ratio", "wds_read"],
        args,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
