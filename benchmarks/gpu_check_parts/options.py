"""The GPU check's command line: every flag, and the defaults that differ between a run on a GPU and
``--dry-run`` on the CPU (tiny model, a few steps, fp32), filled in once parsed.
"""

from __future__ import annotations

import argparse

from .base import DEFAULT_OUT, REPO


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The command line, with the defaults of a GPU run or of ``--dry-run`` filled in; ``description`` is
    the script's docstring, which ``--help`` shows."""
    p = argparse.ArgumentParser(
        prog="gpu_check.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="CPU only (GPUs hidden), tiny model, a few steps")
    p.add_argument(
        "--data", default=None, help="directory of webdataset shards (JPEG + .txt); default: made with vlp-data photos"
    )
    p.add_argument(
        "--out", default=None, help=f"results folder (default {DEFAULT_OUT.relative_to(REPO)}/; dry run: a temp dir)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="open_clip name or JSON arch (default ViT-B-32; dry run configs/models/vlp-tiny-vit.json)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 60; dry run 4)")
    p.add_argument(
        "--warmup", type=int, default=None, help="first steps left out of the medians (default 10; dry run 1)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="per GPU (default 256; dry run 8)")
    p.add_argument("--workers", type=int, default=None, help="loader workers, both trainers (default 8; dry run 1)")
    p.add_argument(
        "--precision",
        default=None,
        choices=["bf16", "fp32"],
        help="vlp's train.precision, open_clip's amp_bf16 / fp32 (default bf16; dry run fp32)",
    )
    p.add_argument("--decoders", default="fast,device", help="vlp's data.decoder values (GPU decode path off, on)")
    p.add_argument(
        "--runs",
        default=None,
        help="comma-separated configurations: BACKEND:DECODER (ddp, zero2) or open_clip "
        "(default: open_clip and every backend x decoder; dry run: open_clip,ddp:<first decoder>,zero2:<last>)",
    )
    p.add_argument("--corpus-n", type=int, default=None, help="images vlp-data photos makes (default 4096; dry run 64)")
    p.add_argument("--corpus-size", default=None, help="their size, WxH or N (default 640x480; dry run 256)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's bf16 dense peak (default: from its name)"
    )
    p.add_argument("--run-timeout-s", type=float, default=None, help="one run's limit (default 150; dry run 300)")
    p.add_argument("--budget-s", type=float, default=None, help="the whole check's limit (default 480; dry run 900)")
    p.add_argument(
        "--vlp-set", action="append", default=[], metavar="KEY=VALUE", help="extra vlp override (repeatable)"
    )
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (corpus, run folders, logs)")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="devices for the 2-rank run (default: torch.cuda.device_count(); dry run 2)",
    )
    args = p.parse_args(argv)
    _fill_defaults(args)
    if args.warmup >= args.steps:
        p.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")
    return args


def _fill_defaults(args: argparse.Namespace) -> None:
    """The defaults of a GPU run, or of --dry-run, for every option left unset (in place)."""
    dry = args.dry_run
    defaults = {
        "model": str(REPO / "configs/models/vlp-tiny-vit.json") if dry else "ViT-B-32",
        "steps": 4 if dry else 60,
        "warmup": 1 if dry else 10,
        "batch_size": 8 if dry else 256,
        "workers": 1 if dry else 8,
        "corpus_n": 64 if dry else 4096,
        "corpus_size": "256" if dry else "640x480",
        "precision": "fp32" if dry else "bf16",
        "run_timeout_s": 300.0 if dry else 150.0,
        "budget_s": 900.0 if dry else 480.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.gpus is None:
        if dry:
            args.gpus = 2  # the 2-rank run on 2 CPU processes, so that the dry run covers it
        else:
            import torch

            args.gpus = torch.cuda.device_count()
