"""vlp-eval: evaluate any open_clip model (ours, exported, or anyone's)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


def _err(msg: str) -> int:
    print(f"vlp-eval: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_zeroshot(args: argparse.Namespace) -> int:
    import torch

    from .datasets import DatasetError, read_dataset, read_templates
    from .models import ModelError, load_model
    from .report import zeroshot_table
    from .zeroshot import evaluate

    try:
        templates = read_templates(args.templates) if args.templates else None
        datasets = [read_dataset(d, args.split, args.classnames) for d in args.dataset]  # all checked first
        loaded = load_model(args.model, args.pretrained, args.device)
    except (DatasetError, ModelError) as exn:
        return _err(str(exn))
    results = []
    for ds in datasets:
        start = time.perf_counter()
        print(f"# {ds.name} ({ds.split or ds.task}): {ds.counts()}", file=sys.stderr, flush=True)
        try:
            metrics = evaluate(
                loaded.model,
                loaded.preprocess,
                loaded.tokenizer,
                ds,
                args.device,
                args.batch_size,
                amp=args.amp,
                templates=templates,
            )
        except (DatasetError, ValueError) as exn:
            return _err(str(exn))
        results.append(
            {
                "dataset": ds.name,
                "split": ds.split,
                "task": ds.task,
                "counts": ds.counts(),
                "templates": list(templates or ds.templates or []) if ds.task == "classification" else None,
                "metrics": metrics,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    out = {
        "model": args.model,
        "pretrained": args.pretrained,
        "precision": "amp" if args.amp else "fp32",
        "torch": torch.__version__,
        "results": results,
    }
    print(zeroshot_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwritten {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlp-eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "zeroshot",
        help="zero-shot classification and retrieval (CLIP_benchmark's metrics)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument(
        "--model",
        required=True,
        help="open_clip model: a name (with --pretrained), local-dir:PATH, or an architecture .json",
    )
    s.add_argument("--pretrained", default="", help="open_clip pretrained tag or local weights file")
    s.add_argument(
        "--dataset",
        required=True,
        nargs="+",
        help="CLIP_benchmark wds root, ImageFolder, or CSV/JSONL of (image, caption); several allowed",
    )
    s.add_argument("--split", default="test", help="split of a wds dataset")
    s.add_argument("--classnames", default=None, help="class names file for an ImageFolder (one per line)")
    s.add_argument("--templates", default=None, help="templates file (one per line with {c}, or a JSON list)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--amp", action="store_true", help="autocast (default fp32, as CLIP_benchmark --no_amp)")
    s.add_argument("--out", default=None, help="results JSON")
    s.set_defaults(fn=cmd_zeroshot)
    return p


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
