"""The report's inputs, read and checked: each ``PATH`` or ``NAME=PATH`` is a ``vlp-eval zeroshot`` or
``vlp-eval compositional`` result JSON, or a training run (its folder, ``metrics.jsonl`` or
``eval.jsonl``), collected into one :class:`Inputs`: per benchmark a score per model and column, the
chance levels and published references, and the runs' loss and evaluation records. Anything it cannot
read is a :class:`ReportError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


class ReportError(ValueError):
    """An input the report cannot read; the message names the file."""


@dataclass
class Score:
    accuracy: float
    n: int | None = None
    correct: int | None = None

    def counts(self) -> tuple[int, int] | None:
        """(correct, n) when the file stores both: an interval is drawn only for a proportion of counted
        items (a macro average, as ARO's VG scores, has none)."""
        if self.n is None or self.correct is None:
            return None
        return (self.correct, self.n)


@dataclass
class Run:
    folder: Path
    losses: list[tuple[float, float]]  # (step, loss)
    last: dict  # the last metrics.jsonl record
    evals: list[dict]  # eval.jsonl records


@dataclass
class Inputs:
    # benchmark -> model -> column -> score; benchmark keys: "zeroshot" and each compositional benchmark
    tables: dict[str, dict[str, dict[str, Score]]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)  # benchmark -> REFERENCES key
    runs: dict[str, Run] = field(default_factory=dict)  # training runs by name
    sources: list[tuple[str, str]] = field(default_factory=list)  # (name, path) as given


def _model_name(data: dict, fallback: str) -> str:
    """``local-dir:runs/a/export`` -> ``runs/a/export``; a pretrained tag or file joins the name, so that
    ViT-B-32 with openai and with laion2b weights stay two models."""
    spec = str(data.get("model") or "")
    name = spec.split(":", 1)[1] if spec.startswith("local-dir:") else spec
    pretrained = str(data.get("pretrained") or "")
    if name and pretrained:
        name += f" ({Path(pretrained).name})"
    return name or fallback


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exn:
        raise ReportError(f"{path}: cannot read it as JSON ({exn})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object (a vlp-eval result)")
    return data


def number(value: object) -> float:
    """A metric as a float; None or anything else non-numeric is NaN (drawn as a gap)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _put(inputs: Inputs, bench: str, name: str, column: str, score: Score, where: Path) -> None:
    row = inputs.tables.setdefault(bench, {}).setdefault(name, {})
    if column in row:
        raise ReportError(
            f"{where}: a second result for {name!r} on {bench} {column}; name the inputs apart with NAME=PATH"
        )
    row[column] = score


def _add_zeroshot(inputs: Inputs, results: list, name: str, where: Path) -> None:
    for r in results:
        split = r.get("split")
        named = r["dataset"].endswith(f":{split}")  # training's eval.jsonl names its sets folder:split already
        column = f"{r['dataset']}:{split}" if split and not named else r["dataset"]
        key = "acc1" if r["task"] == "classification" else "image_retrieval_recall@1"
        value = number(r["metrics"].get(key))
        if math.isnan(value):
            continue
        n = r.get("n")
        if isinstance(n, dict):  # retrieval: recall@k of the images is a fraction of the captions
            n = n.get("captions")
        if not isinstance(n, int):
            n = r.get("counts", {}).get("images") if r["task"] == "classification" else None
        correct = (r.get("correct") or {}).get(key)
        _put(inputs, "zeroshot", name, column, Score(value, n, correct if isinstance(correct, int) else None), where)


def _add_compositional(inputs: Inputs, data: dict, name: str, where: Path) -> None:
    bench = str(data["benchmark"])
    for column, s in {**data["subsets"], **(data.get("pooled") or {})}.items():
        _put(inputs, bench, name, column, Score(number(s["accuracy"]), s.get("n"), s.get("correct")), where)
    if data.get("chance") is not None:
        inputs.chance[bench] = float(data["chance"])
    if data.get("reference_key"):
        inputs.references[bench] = data["reference_key"]


def _add_run(inputs: Inputs, folder: Path, name: str) -> None:
    if not (folder / "metrics.jsonl").is_file() and not (folder / "eval.jsonl").is_file():
        raise ReportError(f"{folder}: not a training run (no metrics.jsonl or eval.jsonl in it)")
    if name in inputs.runs:
        raise ReportError(f"{folder}: a second training run named {name!r}; name the runs apart with NAME=PATH")
    metrics = _jsonl(folder / "metrics.jsonl")
    losses = [(float(r["step"]), number(r.get("loss"))) for r in metrics if "step" in r]
    evals = _jsonl(folder / "eval.jsonl")
    for i, record in enumerate(evals, 1):
        if not isinstance(record.get("results"), list) or "step" not in record:
            raise ReportError(f"{folder / 'eval.jsonl'}:{i}: an evaluation record needs 'step' and 'results'")
    inputs.runs[name] = Run(folder, losses, metrics[-1] if metrics else {}, evals)
    if evals:  # the run's final zero-shot numbers join the zero-shot table
        _add_zeroshot(inputs, evals[-1]["results"], name, folder / "eval.jsonl")


def read_inputs(specs: list[str]) -> Inputs:
    """Each spec is PATH or NAME=PATH: a result JSON, a run folder, or a run's metrics.jsonl/eval.jsonl."""
    inputs = Inputs()
    for spec in specs:
        label, sep, raw = spec.partition("=")
        if not sep or Path(spec).exists():
            label, raw = "", spec
        if not raw:
            raise ReportError(f"{spec}: NAME=PATH needs a path")
        path = Path(raw)
        if not path.exists():
            raise ReportError(f"{path} does not exist")
        if path.is_file() and path.suffix == ".jsonl":
            path = path.parent
        try:
            if path.is_dir():
                name = label or path.name
                _add_run(inputs, path, name)
            else:
                data = _read_json(path)
                name = label or _model_name(data, path.stem)
                if isinstance(data.get("results"), list):
                    _add_zeroshot(inputs, data["results"], name, path)
                elif "benchmark" in data and isinstance(data.get("subsets"), dict):
                    _add_compositional(inputs, data, name, path)
                else:
                    raise ReportError(
                        f"{path}: neither a vlp-eval zeroshot result (a 'results' list) nor a compositional one "
                        "('benchmark' and 'subsets')"
                    )
        except (KeyError, TypeError, AttributeError, ValueError) as exn:
            if isinstance(exn, ReportError):
                raise
            raise ReportError(
                f"{path}: not a well-formed vlp-eval result or run ({type(exn).__name__}: {exn})"
            ) from None
        inputs.sources.append((name, str(raw)))
    if not inputs.tables and not inputs.runs:
        raise ReportError("nothing to report: give result JSONs or training run folders")
    return inputs


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                raise ReportError(f"{path}:{i}: not a JSON line") from None
            if not isinstance(row, dict):
                raise ReportError(f"{path}:{i}: expected a JSON object")
            rows.append(row)
    return rows
