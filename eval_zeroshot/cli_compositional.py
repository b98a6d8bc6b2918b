"""``vlp-eval compositional``: SugarCrepe, ARO and the shapes world, scored as the official scripts, their
files fetched first with ``--download``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlp.common.atomic import write_text_atomic
from vlp.common.cli import EXIT_USAGE, add_command, add_device_args, add_model_args, add_output_arg, error


def _err(msg: str) -> int:
    return error("vlp-eval", msg, EXIT_USAGE)


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


def add_compositional_command(commands: argparse._SubParsersAction) -> None:
    s = add_command(
        commands,
        "compositional",
        "SugarCrepe, ARO and the shapes world, scored as the official scripts",
        cmd_compositional,
        [
            "vlp-eval compositional --model local-dir:runs/demo/export --benchmark shapes "
            "--data data/shapes/compositional",
            "vlp-eval compositional --model ViT-B-32 --pretrained openai --benchmark sugarcrepe "
            "--download bench --with-images",
            "vlp-eval compositional --model ViT-B-32 --pretrained openai --benchmark aro-vgr "
            "--download bench --out vgr.json",
        ],
    )
    add_model_args(s)
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
    add_device_args(s)
    add_output_arg(s, "results JSON (a PNG bar chart is written beside it)")
