"""vlp-data: make, inspect and stream image-text shards."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from vlp.common.atomic import write_json_atomic
from vlp.common.cli import EXIT_FAILED, EXIT_USAGE, add_command, command_parser, error, positive_int, run

from .cli_neighbours import add_neighbours_command
from .cli_photos import add_photos_command
from .cli_probes import add_probes_command
from .shards.specs import SpecError
from .shards.stats import default_workers, shard_stats
from .sources.ingest import TableError, write_shards
from .sources.shapes import DEFAULT_HELDOUT, WorldConfig, generate_world, parse_heldout


def _err(msg: str, code: int) -> int:
    return error("vlp-data", msg, code)


def _shard_progress(done: int, total: int) -> None:
    if total >= 10 and (done % max(1, total // 10) == 0 or done == total):
        print(f"  {done}/{total} shards", file=sys.stderr)


def cmd_shapes(args: argparse.Namespace) -> int:
    try:
        cfg = WorldConfig(
            train_samples=args.train_samples,
            image_size=args.image_size,
            seed=args.seed,
            heldout=parse_heldout(args.heldout),
            zeroshot_per_class=args.zeroshot_per_class,
            compositional_per_type=args.compositional_per_type,
            shard_size=args.shard_size,
            twins=args.twins,
        )
        summary = generate_world(args.out, cfg, workers=args.workers, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exn:
        return _err(str(exn), EXIT_USAGE)
    print(json.dumps({"out": summary.out, "counts": summary.counts, "seconds": round(summary.seconds, 2)}))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    try:
        summary = write_shards(args.input, args.out, args.shard_size, args.image_col, args.caption_col)
    except (TableError, FileExistsError, ValueError) as exn:
        return _err(str(exn), EXIT_USAGE)
    result = {"out": summary.out, "written": summary.written, "shards": summary.shards, "skipped": summary.skipped}
    print(json.dumps(result))
    if summary.written == 0:
        return _err(f"no sample could be written from {args.input} (skipped: {summary.skipped})", EXIT_FAILED)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        result = shard_stats(args.spec, workers=args.workers, progress=_shard_progress)
    except SpecError as exn:
        return _err(str(exn), EXIT_USAGE)
    print(json.dumps(result, indent=2))
    return 0


def cmd_peek(args: argparse.Namespace) -> int:
    """Stream a few batches through the training loader and say what came out."""
    import open_clip  # deferred: slow to import and not needed by the other commands

    from .loader import DataPipelineError, StreamingLoader

    try:
        loader = StreamingLoader(
            args.spec,
            preprocess=open_clip.image_transform(args.image_size, is_train=True),
            tokenizer=open_clip.get_tokenizer("ViT-B-32"),
            batch_size=args.batch_size,
            num_workers=args.workers,
            num_negatives=args.negatives,
            mode=args.mode,
            seed=args.seed,
            neighbours=args.neighbours,
        )
        start = time.perf_counter()
        seen = 0
        for i, batch in enumerate(loader):
            seen += len(batch["key"])
            shapes_ = {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
            print(
                f"batch {i}: {shapes_}  first caption: {batch['text'][0].count_nonzero().item()} tokens, "
                f"key {batch['key'][0]}"
            )
            if i + 1 >= args.batches:
                break
        seconds = time.perf_counter() - start
        loader.close()
    except SpecError as exn:  # the shards named do not exist: the command line's to fix
        return _err(str(exn), EXIT_USAGE)
    except (DataPipelineError, ValueError) as exn:  # the shards exist but their data cannot be streamed
        return _err(str(exn), EXIT_FAILED)
    print(
        json.dumps(
            {
                "batches": min(args.batches, i + 1),
                "samples": seen,
                "samples_per_s": round(seen / seconds, 1),
                "skipped": loader.skipped,
                "state": loader.state_dict(),
            }
        )
    )
    return 0


def cmd_negatives(args: argparse.Namespace) -> int:
    from .negatives import report
    from .negatives.rewrite import ImportFormatError, add_negatives, read_imports
    from .negatives.types import TYPES

    if args.report:
        folder = args.sugarcrepe or report.default_sugarcrepe_dir()
        if folder is None:
            return _err("--report needs --sugarcrepe DIR (the official SugarCrepe JSON files)", EXIT_USAGE)
        try:
            rows = report.report(folder, k=args.k, seed=args.seed)
        except FileNotFoundError as exn:
            return _err(str(exn), EXIT_USAGE)
        print(f"Rule-based negatives against SugarCrepe's official ones ({folder}):\n")
        print(report.markdown(rows))
        if args.json:
            write_json_atomic(args.json, rows)
        return 0
    if not args.spec or not args.out:
        return _err("give SPEC and --out (or --report)", EXIT_USAGE)
    types = None
    if args.types:
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        unknown = sorted(set(types) - set(TYPES))
        if unknown:
            return _err(f"unknown --types {unknown}; known: {', '.join(TYPES)}", EXIT_USAGE)

    try:
        imports = read_imports(args.from_jsonl) if args.from_jsonl else None
        summary = add_negatives(
            args.spec, args.out, k=args.k, types=types, seed=args.seed, imports=imports, progress=_shard_progress
        )
    except (SpecError, ImportFormatError, FileExistsError, ValueError) as exn:
        return _err(str(exn), EXIT_USAGE)
    print(json.dumps(summary.__dict__))
    return 0


def _add_shapes_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "shapes",
        "generate the synthetic shapes world (train, zeroshot, compositional)",
        cmd_shapes,
        ["vlp-data shapes --out data/shapes", "vlp-data shapes --out data/tiny --train-samples 400 --shard-size 50"],
    )
    s.add_argument("--out", required=True, help="output directory (built beside it, then renamed into place)")
    s.add_argument("--train-samples", type=positive_int, default=20_000, help="training samples")
    s.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0, help="same arguments give byte-identical files")
    s.add_argument(
        "--heldout",
        default=",".join(f"{c} {s}" for c, s in DEFAULT_HELDOUT),
        help="comma-separated 'colour shape' pairs that never appear in training, or 'none'",
    )
    s.add_argument("--zeroshot-per-class", type=int, default=20, help="zero-shot images per class")
    s.add_argument("--compositional-per-type", type=int, default=300, help="compositional examples per file")
    s.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    s.add_argument("--workers", type=int, default=None, help="generator processes (default: up to 4)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing, different output directory")
    s.add_argument(
        "--no-twins",
        dest="twins",
        action="store_false",
        help="no twin image (neighbour.png, JSON 'neighbour') beside each training sample",
    )


def _add_shards_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "shards",
        "write shards from a CSV/TSV/JSONL of (image path, caption[, negatives])",
        cmd_shards,
        ["vlp-data shards --input pairs.csv --out data/mine", "vlp-data shards --input pairs.jsonl --out data/mine"],
    )
    s.add_argument("--input", required=True, help="table file: .csv, .tsv (with a header) or .jsonl")
    s.add_argument("--out", required=True, help="new output directory")
    s.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    s.add_argument("--image-col", default=None, help="image column (default: image/image_path/filepath/path/...)")
    s.add_argument("--caption-col", default=None, help="caption column (default: caption/text/title)")


def _add_stats_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "stats",
        "count samples, shards, skipped samples and caption lengths (JSON)",
        cmd_stats,
        ["vlp-data stats data/shapes/train", "vlp-data stats 'data/mine/shard-{000000..000009}.tar'"],
    )
    s.add_argument("spec", help="a directory of .tar files, a brace spec, a pipe: command or a URL ('::' joins)")
    s.add_argument("--workers", type=int, default=default_workers(), help="processes reading shards")


def _add_negatives_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "negatives",
        "add hard-negative captions to shards (or --report on SugarCrepe)",
        cmd_negatives,
        [
            "vlp-data negatives data/mine --out data/mine_neg --k 4",
            "vlp-data negatives data/mine --out data/mine_neg --from-jsonl llm_negatives.jsonl",
            "vlp-data negatives --report --sugarcrepe ../shared/benchmarks/sugarcrepe",
        ],
    )
    s.add_argument("spec", nargs="?", help="input shards (directory, brace spec, ...)")
    s.add_argument("--out", help="new output directory; shards keep their names")
    s.add_argument("--k", type=int, default=4, help="negatives per caption")
    s.add_argument("--types", default=None, help="comma-separated subset of the negative types")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--from-jsonl",
        default=None,
        help="import negatives instead: DeGLA's JSON list or a JSONL of {key|caption, negatives}",
    )
    s.add_argument("--report", action="store_true", help="compare with SugarCrepe's official negatives")
    s.add_argument("--sugarcrepe", default=None, help="folder of SugarCrepe *.json (default: ../shared/...)")
    s.add_argument("--json", default=None, help="with --report: also write the rows as JSON here")


def _add_peek_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "peek",
        "stream a few batches through the training loader",
        cmd_peek,
        ["vlp-data peek data/shapes/train --batches 2", "vlp-data peek data/mine --negatives 4 --workers 0"],
    )
    s.add_argument("spec", help="shard spec, as for stats")
    s.add_argument("--batches", type=positive_int, default=5)
    s.add_argument("--batch-size", type=positive_int, default=32)
    s.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("--negatives", type=int, default=0, help="hard negatives per sample (K)")
    s.add_argument("--mode", choices=("split", "resampled"), default="split")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--neighbours", action="store_true", help="also load each sample's neighbour (hard-negative image)")


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser(
        "vlp-data",
        __doc__,
        [
            "vlp-data shapes --out data/shapes",
            "vlp-data shards --input pairs.csv --out data/mine",
            "vlp-data stats data/mine",
            "vlp-data peek data/shapes/train --batches 2",
        ],
    )

    _add_shapes_command(sub)
    _add_shards_command(sub)
    _add_stats_command(sub)
    _add_negatives_command(sub)
    add_probes_command(sub)
    add_neighbours_command(sub)
    add_photos_command(sub)
    _add_peek_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return run("vlp-data", args.fn, args)


if __name__ == "__main__":
    sys.exit(main())
