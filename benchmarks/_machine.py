"""What machine a benchmark ran on, recorded beside every result."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from vlp.common.atomic import write_json_atomic
from vlp.common.tables import markdown_table


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def report(title: str, rows: list[dict], columns: list[str], args: argparse.Namespace, **extra) -> dict:
    """Print the table under ``title`` and write the JSON (machine, settings, rows) to ``args.json``.

    The settings are the benchmark's arguments (all but ``--json``) and ``extra``.
    """
    print(title + "\n")
    print(markdown_table(rows, columns))
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    result = {"machine": machine(), **settings, **extra, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, result)
    print(f"\nwritten {args.json}")
    return result
