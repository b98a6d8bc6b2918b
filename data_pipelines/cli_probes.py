"""``vlp-data shapes-probes``: the shapes world's compositional probes and zero-shot sets in another drawing."""

from __future__ import annotations

import argparse
import json

from vlp.common.cli import EXIT_USAGE, add_command, error

from .sources.shapes.drawing import DRAWINGS
from .sources.shapes.probes import ProbesConfig, generate_probes
from .sources.shapes.scene import DEFAULT_HELDOUT, parse_heldout

HELP = "draw the shapes world's compositional probes and zero-shot sets in another drawing (e.g. alt)"
DESCRIPTION = (
    "Write only the shapes world's compositional probes (OUT/compositional: SugarCrepe-format JSON, images/, "
    "heldout/) and zero-shot sets (OUT/zeroshot: CLIP_benchmark wds layout, splits test and heldout), drawn "
    "in a named drawing. 'alt' is one no training sample uses (other object sizes and positions, a darker "
    "outline, no anti-aliasing, a grey gradient background, stronger noise), while every scene means the "
    "same as in the world. Scenes come from seed streams of their own (splits probes_*), so none is a "
    "training sample or one of the world's own probes; the same --seed with --drawing default gives the "
    "same probes drawn the world's way. Same arguments give byte-identical files, and an existing output "
    "made with them is reused."
)


def cmd_shapes_probes(args: argparse.Namespace) -> int:
    try:
        cfg = ProbesConfig(
            drawing=args.drawing,
            image_size=args.image_size,
            seed=args.seed,
            heldout=parse_heldout(args.heldout),
            compositional_per_type=args.per_type,
            zeroshot_per_class=args.zeroshot_per_class,
        )
        summary = generate_probes(args.out, cfg, workers=args.workers, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exn:
        return error("vlp-data", str(exn), EXIT_USAGE)
    result = {"out": summary.out, "drawing": cfg.drawing, "counts": summary.counts, "reused": summary.reused}
    print(json.dumps({**result, "seconds": round(summary.seconds, 2)}))
    return 0


def add_probes_command(commands: argparse._SubParsersAction) -> None:
    s = add_command(
        commands,
        "shapes-probes",
        HELP,
        cmd_shapes_probes,
        ["vlp-data shapes-probes --out data/shapes_alt --drawing alt"],
    )
    s.description = DESCRIPTION
    s.add_argument("--out", required=True, help="output directory (built beside it, then renamed into place)")
    s.add_argument("--drawing", default="alt", help=f"the drawing: {', '.join(DRAWINGS)}")
    s.add_argument("--seed", type=int, default=0, help="seed of the probes' own streams (not the world's)")
    s.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    s.add_argument("--per-type", type=int, default=300, help="compositional examples per SugarCrepe file")
    s.add_argument("--zeroshot-per-class", type=int, default=20, help="zero-shot images per class")
    s.add_argument(
        "--heldout",
        default=",".join(f"{c} {s}" for c, s in DEFAULT_HELDOUT),
        help="comma-separated 'colour shape' pairs held out of training (as the world's), or 'none'",
    )
    s.add_argument("--workers", type=int, default=None, help="generator processes (default: up to 4)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing, different output directory")
