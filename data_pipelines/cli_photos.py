"""``vlp-data photos``: shards of real JPEG photographs for throughput benchmarks, without a download."""

from __future__ import annotations

import argparse
import json
import sys

from vlp.common.cli import EXIT_USAGE, add_command, error, positive_int

HELP = "write shards of JPEG crops of the photographs scikit-image and scikit-learn ship (a throughput corpus)"
DESCRIPTION = (
    "Write webdataset shards of JPEGs (with .txt captions and .json crop records) cut, rescaled and flipped "
    "from the real photographs that scikit-image and scikit-learn ship in their wheels (install them with "
    "pip install 'vlp[bench]'; nothing is downloaded). A throughput corpus with real JPEG statistics "
    "(entropy, 4:2:0 chroma subsampling, size), not a training set: 18 source photographs, overlapping "
    "crops. --size WxH gives exactly W x H (640x480: COCO-like); --size N gives img2dataset's default "
    "resize_mode=border (longer side to N, centred on a white N x N square; its default N is 256). Same "
    "arguments (and Pillow and package versions) give byte-identical files."
)


def cmd_photos(args: argparse.Namespace) -> int:
    from .sources.photos import MissingExtraError, PhotosConfig, parse_size, write_photos

    try:
        width, height, border = parse_size(args.size)
        cfg = PhotosConfig(
            n=args.n,
            width=width,
            height=height,
            border=border,
            seed=args.seed,
            quality=args.quality,
            shard_size=args.shard_size,
        )
        summary = write_photos(args.out, cfg, workers=args.workers, log=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, FileExistsError, MissingExtraError) as exn:
        return error("vlp-data", str(exn), EXIT_USAGE)
    print(json.dumps({"out": summary.out, "counts": summary.counts, "seconds": round(summary.seconds, 2)}))
    return 0


def add_photos_command(commands: argparse._SubParsersAction) -> None:
    s = add_command(
        commands,
        "photos",
        HELP,
        cmd_photos,
        ["vlp-data photos --out data/photos", "vlp-data photos --out data/photos256 --size 256 --n 500"],
    )
    s.description = DESCRIPTION
    s.add_argument("--out", required=True, help="new output directory (an existing non-empty one is refused)")
    s.add_argument("--n", type=positive_int, default=2000, help="samples")
    s.add_argument(
        "--size",
        default="640x480",
        help="WxH: exactly W x H (COCO-like); N: img2dataset's border mode, N x N (its default: 256)",
    )
    s.add_argument("--shard-size", type=positive_int, default=500, help="samples per shard")
    s.add_argument("--seed", type=int, default=0, help="same arguments give byte-identical shards")
    s.add_argument("--quality", type=int, default=90, help="JPEG quality (img2dataset's default is 95)")
    s.add_argument("--workers", type=int, default=None, help="encoder processes (default: up to 4)")
