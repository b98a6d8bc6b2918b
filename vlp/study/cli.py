"""``vlp-study --config configs/studies/NAME.yaml``: run a study's cells one after another, then write
its table and plots.

A cell is done when its JSON exists in ``<results>/cells/``; running the same command again skips done
cells and resumes an interrupted one from its newest checkpoint, so a study can span several sessions.
Exit codes: 0 every cell done, 130 interrupted (Ctrl-C / SIGTERM; rerun to continue), 1 a cell failed
(its log is named), 2 a study file to fix.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..common.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, error, non_negative_int, parser
from .cells import (
    START,
    Cell,
    CellFailed,
    Interrupted,
    cells_of,
    claim,
    finish_cell,
    held_by,
    result_path,
    train_cell,
)
from .report import write_report
from .spec import Study, StudyError, load_study


def build_parser() -> argparse.ArgumentParser:
    p = parser(
        "vlp-study",
        "Run a seeded, budget-matched study (recipes × seeds × one varied setting) and aggregate it: mean and 95% "
        "interval per metric, paired tests against the control, table and plots. Interrupt with Ctrl-C at any "
        "time; the same command resumes. Studies: configs/studies/*.yaml",
        [
            "vlp-study --config configs/studies/main.yaml",
            "vlp-study --config configs/studies/main.yaml --list",
            "vlp-study --config configs/studies/main.yaml --only 'negclip__*' --max-cells 1",
            "vlp-study --config configs/studies/main.yaml --report-only",
        ],
    )
    p.add_argument("--config", required=True, help="the study YAML")
    p.add_argument("--only", action="append", default=[], help="run only cells whose name matches (glob; repeatable)")
    p.add_argument("--max-cells", type=non_negative_int, default=0, help="stop after running this many cells (0: all)")
    p.add_argument("--report-only", action="store_true", help="aggregate the finished cells; run nothing")
    p.add_argument("--list", action="store_true", help="list the cells and whether each is done")
    p.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="torch threads of the evaluation (0: torch's default); training threads are the cells' train.threads",
    )
    return p


def _machine() -> dict:
    import torch

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _curve(run_dir: Path) -> list[tuple[int, str, float]]:
    path = run_dir / "eval.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for r in rec["results"]:
            if "acc1" in r["metrics"]:
                rows.append((rec["step"], r["dataset"].rsplit(":", 1)[-1], r["metrics"]["acc1"]))
    return rows


def _evaluate(spec: str, study: Study, cell: Cell) -> dict:
    from eval_zeroshot.datasets import DatasetError
    from eval_zeroshot.models import ModelError

    from .evaluate import evaluate_export

    try:
        return evaluate_export(spec, study.evaluate)
    except (DatasetError, ModelError, ValueError, OSError) as exn:
        raise CellFailed(f"cell {cell.name}: evaluating {spec} failed: {exn}") from None


def run_cell(study: Study, cell: Cell, log, keep_open: tuple[int, ...] = ()) -> dict:
    record: dict = {"study": study.name, "cell": cell.name, "recipe": cell.recipe, "seed": cell.seed}
    if cell.recipe == START:
        start = time.perf_counter()
        spec = study.evaluate.start
        spec = f"local-dir:{spec}" if Path(spec).is_dir() else spec  # an export folder, or any open_clip spec
        record.update(_evaluate(spec, study, cell), model=spec)
        record["eval_seconds"] = time.perf_counter() - start
        return record
    run_dir = Path(study.runs) / cell.name
    recipe = next(r for r in study.recipes if r.name == cell.recipe)
    train_seconds = train_cell(study, cell, run_dir, log, keep_open)
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = [summary.get(k) for k in ("first_loss_mean", "last_loss_mean")]
    shown = " -> ".join("n/a" if x is None else f"{x:.3f}" for x in losses)  # None: resumed at the very end
    took = "reused a finished run" if train_seconds is None else f"trained in {train_seconds:.0f} s"
    log(f"  {took} (loss {shown})")
    start = time.perf_counter()
    record.update(_evaluate(f"local-dir:{run_dir / 'export'}", study, cell))
    record.update(
        vary={"key": study.vary_key, "value": cell.value} if study.vary_key else None,
        config=recipe.config,
        overrides=list(study.overrides) + list(recipe.overrides),
        resolved_config=summary["config"],
        train={k: summary[k] for k in ("steps", "skipped_steps", "first_loss_mean", "last_loss_mean")},
        # Wall seconds of the training in this study's processes (every attempt that left checkpoints, when
        # resumed); None when the cell reused a finished run found in its folder (trained by another command).
        train_seconds=train_seconds,
        eval_seconds=time.perf_counter() - start,
        curve=_curve(run_dir),
        export=str(run_dir / "export"),
    )
    return record


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def _signals_stop_the_study():
    """SIGTERM and SIGINT stop the study at a checkpoint (KeyboardInterrupt), for as long as cells run.
    The previous handlers come back afterwards: a caller in the same process (a test, a notebook) and
    the processes it forks later must not inherit a SIGTERM that raises instead of ending them."""
    # Started in the background (nohup, `&`), a process inherits SIGINT ignored; Ctrl-C / kill -INT
    # must still stop the study at a checkpoint.
    old = signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


def _run_cells(study, cells, args) -> int | None:
    """Run the cells not yet done; an exit code when the study stops early, None when all ran."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    todo = [c for c in cells if not result_path(study, c).is_file()]
    print(
        f"study {study.name}: {len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run "
        f"(results in {study.results})",
        flush=True,
    )
    ran = 0
    for i, cell in enumerate(todo, 1):
        if args.max_cells and ran >= args.max_cells:
            break
        if result_path(study, cell).is_file():
            continue  # finished meanwhile by another vlp-study process
        try:
            claimed = claim(study, cell)
        except OSError as exn:
            return error("vlp-study", str(exn), EXIT_USAGE)
        if claimed is None:
            print(f"[{i}/{len(todo)}] {cell.name}: being run by another vlp-study process; skipped", flush=True)
            continue
        if result_path(study, cell).is_file():  # finished by the process that held it until just now
            claimed.release()
            continue
        print(f"[{i}/{len(todo)}] {cell.name}", flush=True)
        start = time.perf_counter()
        try:
            record = run_cell(study, cell, lambda m: print(m, flush=True), (claimed.file.fileno(),))
            record.update(machine=_machine(), vlp_commit=_commit(), seconds=time.perf_counter() - start)
            run_dir = None if cell.recipe == START else Path(study.runs) / cell.name
            path = finish_cell(study, cell, record, run_dir)  # done, before the claim is released
        except (Interrupted, KeyboardInterrupt):
            print(f"vlp-study: interrupted during {cell.name}; rerun the same command to resume it", file=sys.stderr)
            return EXIT_INTERRUPTED
        except CellFailed as exn:
            write_report(study)
            return error("vlp-study", str(exn), EXIT_FAILED)
        finally:
            claimed.release()
        ran += 1
        shown = {
            k: f"{v['accuracy']:.3f}"
            for k, v in record["metrics"].items()
            if k.startswith("zeroshot/") or k.endswith("replace_rel")
        }
        print(f"  done in {record['seconds']:.0f} s -> {path}  {shown}", flush=True)
        write_report(study)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        study = load_study(args.config)
    except StudyError as exn:
        return error("vlp-study", str(exn), EXIT_USAGE)
    cells = [c for c in cells_of(study) if not args.only or any(fnmatch.fnmatch(c.name, p) for p in args.only)]
    if args.list:
        for c in cells:
            pid = None if result_path(study, c).is_file() else held_by(study, c)
            state = "done" if result_path(study, c).is_file() else "todo" if pid is None else "running"
            print(f"{state:7s}  {c.name}" + (f"  (pid {pid})" if pid and pid > 0 else ""))
        return EXIT_OK
    if not args.report_only:
        start = study.evaluate.start.removeprefix("local-dir:")
        missing = [p for p in [start] if p and not Path(p).exists()]
        missing += [
            s.rsplit(":", 1)[0] for s in study.evaluate.zeroshot.values() if not Path(s.rsplit(":", 1)[0]).exists()
        ]
        missing += [p for p in study.evaluate.probes.values() if not Path(p).exists()]
        if missing:
            return error(
                "vlp-study",
                f"{study.path}: missing {', '.join(missing)} (run `make demo` first for the shapes world and its "
                "export; a second drawing: `vlp-data shapes-probes`)",
                EXIT_USAGE,
            )
        with _signals_stop_the_study():
            code = _run_cells(study, cells, args)
        if code is not None:
            return code
    summary = write_report(study)
    print((Path(study.results) / "table.md").read_text())
    print(
        f"table, summary and plots in {study.results}"
        + (f" ({len(summary['missing'])} cells missing)" if summary["missing"] else "")
    )
    return EXIT_OK
