"""Which configurations the GPU check runs, in which order: open_clip's trainer first (the ratios'
denominator), then vlp's backends times decoders, then the hot loop's sync audit and, given two devices,
two ranks; ``--runs`` picks them by hand.
"""

from __future__ import annotations

import argparse

from .base import CheckError

# The configurations: (name, trainer, backend); vlp ones run once per decoder.
BACKENDS = {"ddp": ("DDP", "ddp"), "zero2": ("ZeRO-2", "zero2")}
# Runs after the comparison: (label, processes, sync audit with quiet logging), all under ZeRO-2.
EXTRA_RUNS = {"hot_loop": ("ZeRO-2 hot loop, sync audit", 1, True), "zero2x2": ("ZeRO-2, 2 ranks", 2, False)}


def decoder_key_exists() -> bool:
    """Whether this vlp knows data.decoder (the config rejects unknown keys)."""
    from vlp.config.schema import DataConfig

    return "decoder" in DataConfig.__dataclass_fields__


def plan_runs(args: argparse.Namespace, notes: list[str]) -> list[dict]:
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    if not decoder_key_exists():
        notes.append(
            "this vlp has no data.decoder key: each vlp configuration ran once with its loader's default "
            f"decoder (asked for: {', '.join(decoders)})"
        )
        decoders = [None]
    if args.runs:
        wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    elif args.dry_run:
        wanted = ["open_clip", f"ddp:{decoders[0]}", f"zero2:{decoders[-1]}"]
        notes.append("dry run: 3 configurations (open_clip, vlp DDP, vlp ZeRO-2) instead of every backend x decoder")
    else:  # the peer first: were the budget to run out, the ratios still have their denominator
        wanted = ["open_clip"] + [f"{b}:{d}" for b in BACKENDS for d in decoders]
    if not args.runs:
        # the decoder of a ZeRO-2 run above, whose steps/s logging every step it is set against
        decoder = decoders[-1] if args.dry_run else decoders[0]
        wanted.append(f"hot_loop:{decoder}")
        if args.gpus > 1:
            wanted.append(f"zero2x2:{decoder}")
        else:
            notes.append("one device: the 2-rank run needs two GPUs and was not planned")
    runs = []
    for item in wanted:
        if item == "open_clip":
            runs.append(
                {
                    "name": "open_clip trainer",
                    "trainer": "open_clip",
                    "backend": "single process",
                    "decoder": "PIL (its own)",
                }
            )
            continue
        backend, _, decoder = item.partition(":")
        if backend not in BACKENDS and backend not in EXTRA_RUNS:
            raise CheckError(
                f"unknown configuration {item!r}: use ddp:DECODER, zero2:DECODER, hot_loop:DECODER, "
                "zero2x2:DECODER or open_clip"
            )
        decoder = None if decoder in ("", "None", "default") or decoders == [None] else decoder
        label, processes, audit = EXTRA_RUNS.get(backend, (BACKENDS.get(backend, ("",))[0], 1, False))
        runs.append(
            {
                "name": f"vlp {label} ({decoder or 'default decoder'})",
                "trainer": "vlp",
                "backend": "zero2" if backend in EXTRA_RUNS else backend,
                "decoder": decoder,
                "processes": processes,
                "audit": audit,
            }
        )
    return runs
