"""``vlp-data neighbours``: add each sample's nearest-neighbour image (a hard-negative image) to shards."""

from __future__ import annotations

import argparse
import json
import sys

from vlp.common.cli import EXIT_FAILED, EXIT_USAGE, add_command, add_device_args, add_model_args, error

from .shards.specs import SpecError

HELP = (
    "add each sample's nearest other image (by an open_clip image tower's cosine similarity; never itself "
    "or a byte copy) as neighbour.<ext> and a JSON 'neighbour' {key, caption, negatives}; brute force, O(N^2)"
)


def cmd_neighbours(args: argparse.Namespace) -> int:
    from .neighbours import add_neighbours  # deferred: torch and open_clip are slow to import

    try:
        summary = add_neighbours(
            args.spec,
            args.out,
            model=args.model,
            pretrained=args.pretrained,
            batch_size=args.batch_size,
            device=args.device,
            progress=lambda msg: print(f"  {msg}", file=sys.stderr),
        )
    except (SpecError, FileExistsError, ValueError) as exn:
        return error("vlp-data", str(exn), EXIT_USAGE)
    print(json.dumps(summary.__dict__))
    if summary.samples and not summary.with_neighbour:
        return error("vlp-data", f"no sample got a neighbour (skipped: {summary.skipped})", EXIT_FAILED)
    return 0


def add_neighbours_command(commands: argparse._SubParsersAction) -> None:
    s = add_command(
        commands,
        "neighbours",
        HELP,
        cmd_neighbours,
        [
            "vlp-data neighbours data/mine --out data/mine_nb --model ViT-B-32 --pretrained openai",
            "vlp-data neighbours data/mine --out data/mine_nb --model local-dir:runs/demo/export --device cuda",
        ],
    )
    s.description = HELP[0].upper() + HELP[1:] + "."
    s.add_argument("spec", help="input shards (directory, brace spec, ...)")
    s.add_argument("--out", required=True, help="new output directory; shards keep their names")
    add_model_args(s)  # an empty --pretrained: random weights (seed 0)
    add_device_args(s)
