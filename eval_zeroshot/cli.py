"""vlp-eval: evaluate any open_clip model (ours, exported, or anyone's).

torch, open_clip and the evaluators are imported inside the commands: they take seconds to import,
and ``--help`` or a wrong argument should answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from vlp.common.atomic import write_json_atomic, write_text_atomic
from vlp.common.cli import EXIT_USAGE, add_command, command_parser, error


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


BENCHMARKS = ("sugarcrepe", "aro-vgr", "aro-vga", "aro-coco-order", "aro-flickr-order", "shapes")


def run_compositional(args: argparse.Namespace, loaded) -> dict:
    """Score one benchmark; returns the result record (subsets, pooled, metadata)."""
    from . import compositional as C

    data = Path(args.data)
    scorer = C.Scorer(loaded.model, loaded.preprocess, loaded.tokenizer, args.device, args.batch_size)
    result = {"model": args.model, "pretrained": args.pretrained, "benchmark": args.benchmark, "pooled": {}}
    if args.benchmark in ("sugarcrepe", "shapes"):
        images = Path(args.images) if args.images else (data / "images" if args.benchmark == "shapes" else None)
        if images is None:
            raise C.DatasetError("SugarCrepe needs --images (the COCO val2017 folder)")
        subsets = C.read_sugarcrepe(data, images)
        if args.benchmark == "shapes" and (data / "heldout").is_dir():
            subsets.update({f"heldout/{k}": v for k, v in C.read_sugarcrepe(data / "heldout", images).items()})
        result["subsets"] = C.score_pairs(scorer, subsets)
        if args.benchmark == "sugarcrepe":
            result["pooled"] = C.pooled(result["subsets"], C.SUGARCREPE_GROUPS)
            result["reference_key"] = "sugarcrepe"
        result["chance"] = 0.5
        return result
    if args.benchmark in ("aro-vgr", "aro-vga"):
        images = Path(args.images) if args.images else data.parent / "images"
        records = C.read_aro_vg(data, images)
        correct = C.score_aro_vg(scorer, records, images)
        if args.benchmark == "aro-vgr":
            exclude = set(json.loads(Path(args.exclude).read_text())) if args.exclude else set()
            score, groups = C.macro_accuracy(correct, C.vg_relation_groups(records), exclude=exclude)
            name = "vg_relation"
        else:
            score, groups = C.macro_accuracy(correct, C.vg_attribution_groups(records), min_cases=C.ARO_MIN_PAIR_CASES)
            name = "vg_attribution"
        result.update(
            subsets={name: {"accuracy": score, "n": sum(g["n"] for g in groups.values())}},
            groups=groups,
            reference_key="aro",
            chance=0.5,
        )
        return result
    from . import word_order as W

    images = Path(args.images) if args.images else data.parent
    cases = W.read_karpathy(data, images)
    tagger = W.lexicon_pos_tagger() if args.tagger == "lexicon" else W.spacy_pos_tagger()
    correct = W.score_order(scorer, cases, tagger, args.seed)
    name = "coco_order" if args.benchmark == "aro-coco-order" else "flickr_order"
    result.update(
        subsets={name: C.counted(int(correct.sum()), len(cases))},
        seed=args.seed,
        tagger=args.tagger,
        reference_key="aro",
        chance=0.2,
    )
    return result


def cmd_compositional(args: argparse.Namespace) -> int:
    from .compositional_tables import bar_chart, markdown
    from .datasets import DatasetError
    from .models import ModelError, load_model

    if args.download:
        from .download import BENCHMARKS as DOWNLOADABLE
        from .download import DownloadError, ensure

        if args.benchmark not in DOWNLOADABLE:
            return _err(f"--download fetches {', '.join(DOWNLOADABLE)}; {args.benchmark} is made by vlp-data")
        try:
            fetched = ensure(args.benchmark, Path(args.download), args.mirror, args.with_images)
        except DownloadError as exn:
            return _err(str(exn))
        if args.images is None and args.data is None:  # an explicit --data keeps its own image default
            if not fetched.images_ready:
                return _err(fetched.images_hint)
            args.images = str(fetched.images)
        args.data = args.data or str(fetched.data)
        if args.benchmark == "aro-vgr" and not args.exclude:
            print(
                "note: without --exclude every relation enters the macro accuracy; the official figure leaves "
                "out the ARO notebook's list (EVAL_PROTOCOLS.md: vg_relation_excluded.json)",
                file=sys.stderr,
            )
    elif args.mirror or args.with_images:
        return _err("--mirror and --with-images go with --download DIR")
    elif args.data is None:
        return _err("--data is required (or --download DIR to fetch the benchmark's files first)")
    if not Path(args.data).exists():
        return _err(f"--data {args.data} does not exist")
    try:
        loaded = load_model(args.model, args.pretrained, args.device)
        result = run_compositional(args, loaded)
    except (DatasetError, ModelError) as exn:
        return _err(str(exn))
    print(markdown(result))
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2, default=str) + "\n")
        chart = bar_chart(result, Path(args.out).with_suffix(".png"))
        print(f"\nwritten {args.out} and {chart}", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    p, sub = command_parser("vlp-eval", __doc__)
    s = add_command(sub, "zeroshot", "zero-shot classification and retrieval (CLIP_benchmark's metrics)", cmd_zeroshot)
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
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--amp", action="store_true", help="autocast (default fp32, as CLIP_benchmark --no_amp)")
    s.add_argument("--out", default=None, help="results JSON")

    s = add_command(
        sub, "compositional", "SugarCrepe, ARO and the shapes world, scored as the official scripts", cmd_compositional
    )
    s.add_argument("--model", required=True, help="open_clip model spec, as for zeroshot")
    s.add_argument("--pretrained", default="")
    s.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    s.add_argument(
        "--data",
        default=None,
        help="sugarcrepe/shapes: folder of *.json; aro-vg*: the annotation JSON; *-order: the Karpathy test JSON "
        "(required unless --download gives it)",
    )
    s.add_argument(
        "--download",
        metavar="DIR",
        default=None,
        help="first fetch the benchmark's official files into DIR (resumable; files already there are checked and "
        "reused); --data and --images then default to them. Only SugarCrepe's files have a known sha256; ARO's "
        "and the Karpathy files are only checked to be whole JSON. Offline, says which files to place where",
    )
    s.add_argument(
        "--mirror",
        metavar="URL",
        default=None,
        help="with --download: fetch URL/<path under DIR> instead of the official locations (a folder path means "
        "file://); default $VLP_BENCHMARK_MIRROR",
    )
    s.add_argument(
        "--with-images",
        action="store_true",
        help="with --download, also fetch and unpack the images: COCO val2017 (sugarcrepe, 0.8 GB), ARO's VG zip "
        "(aro-vg*, 1 GB), COCO val2014 (aro-coco-order, 6 GB); Flickr30k needs a sign-up",
    )
    s.add_argument(
        "--images",
        default=None,
        help="image folder (sugarcrepe: COCO val2017; aro-vg*: default DATA's folder/images; "
        "*-order: default DATA's folder; shapes: DATA/images)",
    )
    s.add_argument("--exclude", default=None, help="aro-vgr: JSON list of relations left out of the macro average")
    s.add_argument("--seed", type=int, default=1, help="*-order: seed of the shuffles (official default 1)")
    s.add_argument(
        "--tagger",
        choices=("spacy", "lexicon"),
        default="spacy",
        help="*-order: part-of-speech tagger for the noun/adjective shuffles",
    )
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", default=None, help="results JSON (a PNG bar chart is written beside it)")

    s = add_command(
        sub,
        "diagnose",
        "which tower is blind: caption/negative text cosines, and linear probes of the image features "
        "for the shapes world's spatial relation",
        cmd_diagnose,
    )
    s.add_argument("--model", required=True, help="open_clip model spec, as for zeroshot")
    s.add_argument("--pretrained", default="")
    s.add_argument("--data", required=True, help="a SugarCrepe-format folder, e.g. data/shapes/compositional")
    s.add_argument("--images", default=None, help="its image folder (default DATA/images)")
    s.add_argument("--probe-train", type=int, default=2000, help="fresh probe scenes to fit on")
    s.add_argument("--probe-test", type=int, default=1000, help="fresh probe scenes to score")
    s.add_argument("--seed", type=int, default=0, help="seed of the probe scenes and its validation split")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", default=None, help="results JSON")

    s = add_command(
        sub,
        "report",
        "one self-contained HTML page (and a Markdown twin) comparing result JSONs and training runs",
        cmd_report,
    )
    s.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="vlp-eval zeroshot/compositional JSONs, training run folders (metrics.jsonl, eval.jsonl), each "
        "optionally NAME=PATH to name its column (default: the model, or the run folder's name)",
    )
    s.add_argument("--out", required=True, help="the HTML page, e.g. report.html (report.md and report_charts/ beside)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
