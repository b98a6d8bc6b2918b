"""vlp-eval: evaluate any open_clip model (ours, exported, or anyone's).

torch, open_clip and the evaluators are imported inside the commands: they take seconds to import,
and ``--help`` or a wrong argument should answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from vlp.common.atomic import write_json_atomic
from vlp.common.cli import (
    EXIT_USAGE,
    add_command,
    add_device_args,
    add_model_args,
    add_output_arg,
    command_parser,
    error,
    run,
)

from .cli_compositional import add_compositional_command


def _err(msg: str) -> int:
    return error("vlp-eval", msg, EXIT_USAGE)


def cmd_zeroshot(args: argparse.Namespace) -> int:
    import torch

    from .dataset_specs import read_dataset, read_templates
    from .datasets import DatasetError
    from .models import ModelError, load_model
    from .zeroshot import count_fields, evaluate_counts
    from .zeroshot_tables import zeroshot_table

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
            metrics, counts = evaluate_counts(
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
                **count_fields(counts),
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
        write_json_atomic(args.out, out)
        print(f"\nwritten {args.out}", file=sys.stderr)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .datasets import DatasetError
    from .diagnostics import diagnose, report
    from .models import ModelError

    if not Path(args.data).is_dir():
        return _err(f"--data {args.data} does not exist or is not a folder")
    if args.probe_train < 2 or args.probe_test < 1:
        return _err("--probe-train must be at least 2 and --probe-test at least 1")
    try:
        result = diagnose(
            args.model,
            args.data,
            pretrained=args.pretrained,
            images=args.images,
            probe_train=args.probe_train,
            probe_test=args.probe_test,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
        )
    except (DatasetError, ModelError) as exn:
        return _err(str(exn))
    print(report(result))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"\nwritten {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, write_report

    if Path(args.out).suffix.lower() not in (".html", ".htm"):
        return _err(f"--out {args.out}: the report is an HTML page (e.g. report.html; its Markdown twin goes beside)")
    if Path(args.out).is_dir():
        return _err(f"--out {args.out}: cannot write the report there (it is a folder)")
    try:
        html, md = write_report(args.results, args.out)
    except ReportError as exn:
        return _err(str(exn))
    except OSError as exn:  # --out names a folder, or a path under a file
        return _err(f"--out {args.out}: cannot write the report there ({exn.strerror or exn})")
    print(f"written {html} and {md} (charts in {md.parent / (md.stem + '_charts')})", file=sys.stderr)
    return 0


def _add_zeroshot_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "zeroshot",
        "zero-shot classification and retrieval (CLIP_benchmark's metrics)",
        cmd_zeroshot,
        [
            "vlp-eval zeroshot --model local-dir:runs/demo/export --dataset data/shapes/zeroshot --out zs.json",
            "vlp-eval zeroshot --model ViT-B-32 --pretrained openai --dataset imagenet:/data/imagenet/val --amp",
            "vlp-eval zeroshot --model ViT-B-32 --pretrained openai --dataset cifar10:/data/wds_cifar10 --device cuda",
        ],
    )
    add_model_args(s)
    s.add_argument(
        "--dataset",
        required=True,
        nargs="+",
        help="CLIP_benchmark wds root, ImageFolder, CSV/JSONL of (image, caption), or a named dataset: "
        "imagenet:PATH (synset folders n01440764/... or CLIP_benchmark's wds ImageNet; open_clip's 1,000 class "
        "names and the 80 OpenAI templates), imagenetv2:, imagenet_sketch:, imagenet-a:, imagenet-r:, or any "
        "CLIP_benchmark dataset name with its wds root (cifar10:PATH, ...); several allowed",
    )
    s.add_argument("--split", default="test", help="split of a wds dataset")
    s.add_argument("--classnames", default=None, help="class names file for an ImageFolder (one per line)")
    s.add_argument(
        "--templates",
        default=None,
        help="openai (CLIP's 80 ImageNet prompts), simple (its 7 short ones), or a file (one per line with {c}, "
        "or a JSON list); default: the dataset's own (named datasets: their standard ones)",
    )
    add_device_args(s)
    s.add_argument("--amp", action="store_true", help="autocast (default fp32, as CLIP_benchmark --no_amp)")
    add_output_arg(s, "results JSON")


def _add_diagnose_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "diagnose",
        "which tower is blind: caption/negative text cosines, and linear probes of the image features "
        "for the shapes world's spatial relation",
        cmd_diagnose,
        [
            "vlp-eval diagnose --model local-dir:runs/demo/export --data data/shapes/compositional --out diag.json",
            "vlp-eval diagnose --model local-dir:runs/demo/export --data data/shapes/compositional --probe-train 500",
        ],
    )
    add_model_args(s)
    s.add_argument("--data", required=True, help="a SugarCrepe-format folder, e.g. data/shapes/compositional")
    s.add_argument("--images", default=None, help="its image folder (default DATA/images)")
    s.add_argument("--probe-train", type=int, default=2000, help="fresh probe scenes to fit on")
    s.add_argument("--probe-test", type=int, default=1000, help="fresh probe scenes to score")
    s.add_argument("--seed", type=int, default=0, help="seed of the probe scenes and its validation split")
    add_device_args(s)
    add_output_arg(s, "results JSON")


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub,
        "report",
        "one self-contained HTML page (and a Markdown twin) comparing result JSONs and training runs",
        cmd_report,
        [
            "vlp-eval report demo=runs/demo runs/demo/compositional_shapes.json --out report.html",
            "vlp-eval report clip=runs/clip negclip=runs/negclip --out compare.html",
        ],
    )
    s.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="vlp-eval zeroshot/compositional JSONs, training run folders (metrics.jsonl, eval.jsonl), each "
        "optionally NAME=PATH to name its column (default: the model, or the run folder's name)",
    )
    add_output_arg(s, "the HTML page, e.g. report.html (report.md and report_charts/ beside)", required=True)


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser(
        "vlp-eval",
        __doc__,
        [
            "vlp-eval zeroshot --model local-dir:runs/demo/export --dataset data/shapes/zeroshot --split heldout",
            "vlp-eval compositional --model local-dir:runs/demo/export --benchmark shapes "
            "--data data/shapes/compositional",
            "vlp-eval report demo=runs/demo runs/demo/compositional_shapes.json --out report.html",
        ],
    )
    _add_zeroshot_command(sub)
    add_compositional_command(sub)
    _add_diagnose_command(sub)
    _add_report_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    return run("vlp-eval", args.fn, args)


if __name__ == "__main__":
    sys.exit(main())
