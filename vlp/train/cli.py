"""``vlp-train`` / ``accelerate launch -m vlp.train``: parse, check the configuration, train.

Exit codes (vlp.common.cli's convention): 0 done, or stopped by SIGTERM/SIGINT at a step boundary with a
checkpoint written (a clean stop, which a launcher must not count as a failure; the run resumes from it);
1 the run failed (the message says what is left on disk); 2 a configuration to fix (nothing was
written); 130 interrupted before the run was built.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from data_pipelines.loader import DataPipelineError
from data_pipelines.shards.specs import SpecError, parse_sources

from ..common.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, error, parser
from ..config import ConfigError, load_config, to_yaml
from ..model import check_spec
from .errors import TrainingError
from .loop import train
from .setup import build_run
from .watchdog import is_collective_failure, wrong_device


def build_parser() -> argparse.ArgumentParser:
    p = parser(
        "vlp-train",
        "Train a CLIP-style dual encoder. Under `accelerate launch -m vlp.train` the launch config chooses "
        "processes, DeepSpeed ZeRO stage and hardware; `vlp-train` runs one process. Overrides use dotted keys, "
        "values in YAML.",
        [
            "vlp-train --config configs/demo.yaml output_dir=runs/try train.max_steps=50",
            'vlp-train --config configs/negclip.yaml "objective.terms={clip: 1.0}" output_dir=runs/control',
            "accelerate launch --config_file launch/accelerate/cpu_deepspeed_zero2.yaml -m vlp.train "
            "--config configs/demo.yaml",
            "vlp-train --config configs/demo.yaml --print-config",
        ],
    )
    p.add_argument("--config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    return p


def _quiet_other_ranks() -> None:
    rank0 = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("vlp", "data_pipelines"):
        logging.getLogger(ours).setLevel(logging.INFO if rank0 else logging.WARNING)
    # DeepSpeed's ZeRO collectives call APIs that torch marks deprecated, once per step.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_other_ranks()
    try:
        cfg = load_config(args.config, args.overrides)
        check_spec(cfg.model)
        if cfg.data.train:
            try:
                parse_sources(cfg.data.train, cfg.data.weights)
            except SpecError as exn:
                raise ConfigError(f"data.train: {exn}") from None
    except ConfigError as exn:
        return error("vlp-train", str(exn), EXIT_USAGE)
    except KeyboardInterrupt:
        print("vlp-train: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.print_config:
        print(to_yaml(cfg))
        return EXIT_OK
    try:
        return train(build_run(cfg))
    except ConfigError as exn:
        return error("vlp-train", str(exn), EXIT_USAGE)
    except (TrainingError, DataPipelineError) as exn:  # the data stream failed fast: say why, no traceback
        return error("vlp-train", str(exn), EXIT_FAILED)
    except OSError as exn:  # e.g. a full disk while writing logs: name the file, no traceback
        return error("vlp-train", str(exn), EXIT_FAILED)
    except RuntimeError as exn:
        if wrong_device(exn):
            return error("vlp-train", wrong_device(exn), EXIT_FAILED)
        if not is_collective_failure(exn):
            raise
        # While the run was being built or restored: no heartbeat yet to say who is missing.
        return error(
            "vlp-train", f"the other ranks stopped answering while the run was being set up: {exn}", EXIT_FAILED
        )
