"""Experiment trackers (``log.trackers``: TensorBoard, wandb, mlflow, ...) through accelerate.

Every tracker gets the same scalars at the same steps as metrics.jsonl (``train/<key>``) and eval.jsonl
(``eval/<set>/<metric>``); evaluations also go as one table (``eval/zeroshot``) to the trackers that keep
tables (wandb, mlflow, clearml). mlflow refuses some characters in metric names: there ``recall@1`` is
``recall_at_1``.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import accelerate.utils.imports
from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, MLflowTracker, TensorBoardTracker, on_main_process

# Each tracker's extra in pyproject.toml (tensorboard is a dependency of vlp itself).
TRACKER_EXTRAS = {
    "wandb": "wandb",
    "mlflow": "mlflow",
    "aim": "aim",
    "comet_ml": "comet",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
# Modules a tracker needs beyond what accelerate checks for: mlflow's tables go through pandas, which
# mlflow-skinny (enough to log to a tracking server) does not install.
TRACKER_NEEDS = {"mlflow": ("pandas",)}
EVAL_TABLE = "eval/zeroshot"


def known_trackers() -> list[str]:
    """The tracker names this accelerate knows (its built-ins and any registered with register_tracker_class)."""
    return sorted(LOGGER_TYPE_TO_CLASS)


def _module_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def tracker_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tracker here (unknown, or its package missing); None when it can."""
    known = known_trackers()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown tracker {name!r}{hint}; accelerate's trackers are {', '.join(known)}"
    # accelerate's own test, so that vlp refuses exactly what accelerate would silently leave out.
    available = getattr(accelerate.utils.imports, f"is_{name}_available", None)
    missing = [] if available is None or available() else [name]
    missing += [m for m in TRACKER_NEEDS.get(name, ()) if not _module_installed(m)]
    if not missing:
        return None
    extra = TRACKER_EXTRAS.get(name)
    install = f"pip install 'vlp[{extra}]'" if extra else f"pip install {' '.join(missing)}"
    packages = " and ".join(missing)
    return f"{name!r} needs the {packages} package{'s' if len(missing) > 1 else ''}: {install}"


def project_name(project: str, output_dir: str | Path) -> str:
    """log.project, or output_dir's folder name when it is empty."""
    return project or Path(output_dir).resolve().name


def mlflow_name(key: str) -> str:
    """A metric name mlflow accepts (alphanumerics, _ - . / : and spaces): recall@1 -> recall_at_1."""
    return re.sub(r"[^\w/.\- :]", "_", key.replace("@", "_at_"))


def flat_config(tree: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """The run's configuration as ``section.key`` -> value, what every tracker can store as a
    hyper-parameter (TensorBoard's and mlflow's take scalars only): mappings become dotted keys, lists and
    None their JSON text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


class _MLflow(MLflowTracker):
    """accelerate's mlflow tracker with the metric names mlflow accepts, and tables (accelerate's has none)."""

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        super().log({mlflow_name(k): v for k, v in values.items()}, step=step, **kwargs)

    @on_main_process
    def log_table(
        self,
        table_name: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
        **kwargs,
    ) -> None:
        import mlflow

        # Appending reads the table back first, with a download progress bar that would interleave with the
        # trainer's lines; the user's own setting wins.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # One JSON artifact per table name; mlflow appends each call's rows to it (the rows carry the step).
        table = dataframe if dataframe is not None else {c: [row[i] for row in data] for i, c in enumerate(columns)}
        mlflow.log_table(table, artifact_file=f"{table_name}.json")


def accelerate_trackers(trackers: list[str], project: str, output_dir: str | Path) -> list[str | GeneralTracker]:
    """What ``Accelerator(log_with=...)`` gets for log.trackers: accelerate's names, except two given as
    accelerate tracker objects: TensorBoard, so that its files stay in OUTPUT/tensorboard (by name they would
    go to OUTPUT/<project>), and mlflow (metric names it accepts, tables)."""
    chosen: list[str | GeneralTracker] = []
    for name in dict.fromkeys(trackers):  # once each, in order
        if name == "tensorboard":
            chosen.append(TensorBoardTracker("tensorboard", str(output_dir)))
        elif name == "mlflow":
            chosen.append(_MLflow(experiment_name=project, run_name=Path(output_dir).resolve().name))
        else:
            chosen.append(name)
    return chosen


class Trackers:
    """The accelerator's experiment trackers, started with the run's configuration; main process only."""

    def __init__(self, acc: Accelerator, project: str, output_dir: str | Path, config: dict):
        self.acc = acc
        run = Path(output_dir).resolve().name
        init_kwargs = {
            # wandb's files in OUTPUT/wandb rather than wherever the run was started from
            "wandb": {"name": run, "dir": str(output_dir)},
            "clearml": {"task_name": run},
            "dvclive": {"dir": str(Path(output_dir) / "dvclive")},
        }
        acc.init_trackers(project, config=flat_config(config), init_kwargs=init_kwargs)

    def log(self, values: dict[str, float], step: int) -> None:
        if values:
            self.acc.log(values, step=step)

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """To every tracker that keeps tables; the others have the same numbers as scalars."""
        for tracker in self.acc.trackers:
            if callable(getattr(tracker, "log_table", None)):
                tracker.log_table(table_name=name, columns=columns, data=rows, step=step)

    def close(self) -> None:
        # What accelerator.end_training() does for the trackers; end_training would also destroy the process
        # group, which the end of the run (finish's barrier) still needs.
        for tracker in self.acc.trackers:
            tracker.finish()
        self.acc.trackers = []


def eval_table(step: int, results: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """One row per evaluated set: step, dataset, split, task, images, then every metric any set has."""
    metrics = list(dict.fromkeys(k for r in results for k in r["metrics"]))
    columns = ["step", "dataset", "split", "task", "n", *metrics]
    rows = [
        [step, r["dataset"], r["split"], r["task"], r["counts"].get("images"), *(r["metrics"].get(m) for m in metrics)]
        for r in results
    ]
    # NaN (acc5 of a set with fewer than 5 classes) is not JSON; a table cell says "no value" with None.
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]
    return columns, rows
