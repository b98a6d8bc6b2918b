"""Time to resume mid-epoch: the first batch after a restore at 10%, 50% and 90% of a ~1 GB shard set,
read by offset from the shards' sample index (now) against reading through the consumed part (before).

The shard set: ``--samples`` samples of ``--sample-kb`` KiB each (a small PNG, a caption and random
padding, so every byte must come off the disk or the page cache), in shards of ``--shard-size``,
written once under ``--data`` (default: a temporary folder) and reused.

Two ways to reach position p of an epoch (1 process, batch ``--batch-size``):
  - seek (vlp now): ``StreamingLoader.load_state_dict`` at p, then the first batch: the rank's samples
    are read by offset; nothing before p is read (the bytes read are reported);
  - read-through (vlp before the global order, and webdataset-style loaders): the consumed part of
    the epoch is read again, sample by sample through :func:`~data_pipelines.shards.reader.iter_shard`
    (parsed, not decoded), before the first batch. Timed as that replay of the shards in the epoch's
    order up to p, plus the same first batch.
Both run with a warm page cache (the set is read once first), which favours read-through: from a
cold disk or network storage every consumed byte is also a transfer.

Usage: python benchmarks/resume_seek.py [--samples 10000] [--sample-kb 100] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/resume_seek.py --samples 400 --sample-kb 1 --shard-size 50 --batch-size 8 \
      --json /tmp/resume_seek.json
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_set(folder: Path, samples: int, sample_kb: int, shard_size: int) -> None:
    from PIL import Image

    from data_pipelines.shards.writer import ShardSink

    if (folder / "sizes.json").is_file():
        return
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(buf, format="PNG")
    png = buf.getvalue()
    with ShardSink(folder, shard_size=shard_size) as sink:
        for i in range(samples):
            if i % 1000 == 0:
                print(f"writing sample {i}/{samples}", file=sys.stderr, flush=True)
            pad = os.urandom(sample_kb * 1024)
            sink.write(f"s{i:07d}", {"png": png, "txt": f"caption {i}".encode(), "pad.bin": pad})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--sample-kb", type=int, default=100)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default=None, help="where the shard set is written (kept; default: a temporary folder)")
    p.add_argument("--json", default="benchmarks/results/resume_seek.json")
    args = p.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    import open_clip
    from _machine import report

    from data_pipelines.loader import StreamingLoader
    from data_pipelines.shards.reader import SkipCounter, iter_shard

    tmp = None if args.data else tempfile.TemporaryDirectory()
    folder = Path(args.data or tmp.name)
    make_set(folder, args.samples, args.sample_kb, args.shard_size)
    total = sum(f.stat().st_size for f in folder.glob("*.tar"))
    preprocess, tokenizer = open_clip.image_transform(32, is_train=False), open_clip.get_tokenizer("ViT-B-32")

    def make():
        return StreamingLoader(str(folder), preprocess=preprocess, tokenizer=tokenizer, batch_size=args.batch_size,
                               shuffle_buffer=1000, epochs=1)  # fmt: skip

    ref = make()
    for _ in iter_shard_all(ref, SkipCounter(), iter_shard, len(ref.dataset.order(0))):
        pass  # warm the page cache
    rows = []
    for fraction in (0.1, 0.5, 0.9):
        position = int(fraction * ref.epoch_samples) // args.batch_size * args.batch_size
        state = {**ref.state_dict(), "position": position}
        tic = time.perf_counter()
        loader = make()
        loader.load_state_dict(state)
        next(iter(loader))
        seek_s = time.perf_counter() - tic
        seek_bytes = loader.bytes_read
        tic = time.perf_counter()
        through_bytes = sum(len(b) for b in iter_shard_all(ref, SkipCounter(), iter_shard, position))
        loader = make()
        loader.load_state_dict(state)
        next(iter(loader))
        through_s = time.perf_counter() - tic
        rows.append(
            {
                "position": f"{fraction:.0%}",
                "samples_before": position,
                "seek_s": round(seek_s, 3),
                "seek_mb_read": round(seek_bytes / 2**20, 2),
                "read_through_s": round(through_s, 3),
                "read_through_mb_read": round((through_bytes + loader.bytes_read) / 2**20, 1),
                "speedup": round(through_s / seek_s, 1),
            }
        )
    columns = list(rows[0])
    report(
        f"Resume mid-epoch: first batch of {args.batch_size} after a restore, {args.samples} samples, "
        f"{total / 2**30:.2f} GiB in {len(list(folder.glob('*.tar')))} shards (warm page cache)",
        rows,
        columns,
        argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "data"}),  # no machine paths
        shard_set_bytes=total,
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


def iter_shard_all(loader, counter, iter_shard, upto: int):
    """The epoch's samples in the order the shards are laid out, up to ``upto`` of them, read through
    (parsed, not decoded): the sequential replay a restore without an index must do. Yields each
    sample's member bytes."""
    order = loader.dataset.order(loader.epoch)
    shards = loader.dataset.shards
    n = 0
    for number in order.shard_order:
        for sample in iter_shard(shards[number].path, counter):
            if n >= upto:
                return
            n += 1
            yield b"".join(v for k, v in sample.items() if not k.startswith("__"))


if __name__ == "__main__":
    raise SystemExit(main())
