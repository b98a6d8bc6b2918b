"""``vlp-eval report``: one self-contained HTML page (and a Markdown twin) comparing any number of
results: ``vlp-eval zeroshot`` and ``vlp-eval compositional`` JSONs, and training runs (their
``metrics.jsonl`` / ``eval.jsonl``).

Per benchmark a table (a row per subset, a column per model, then the published columns the compositional
evaluator carries) and
a bar chart with 95% intervals (Wilson's, binomial over the items: one run's sampling error, not the
spread over seeds); per training run its loss curve and zero-shot curves. A result is named by its model
(``local-dir:runs/demo/export`` -> ``runs/demo/export``) or by ``NAME=PATH`` on the command line, so one
model's zero-shot and compositional files land in one column.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from vlp.common.atomic import write_text_atomic
from vlp.common.intervals import wilson
from vlp.common.tables import markdown_table

from .compositional import REFERENCES
from .svg_charts import Bar, BarChart, LineChart, bar_chart, line_chart


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


def _number(value: object) -> float:
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
        value = _number(r["metrics"].get(key))
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
        _put(inputs, bench, name, column, Score(_number(s["accuracy"]), s.get("n"), s.get("correct")), where)
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
    losses = [(float(r["step"]), _number(r.get("loss"))) for r in metrics if "step" in r]
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


# ---------------------------------------------------------------- sections


@dataclass
class Section:
    title: str
    table_columns: list[str]
    table_rows: list[dict]
    charts: list[tuple[str, str]]  # (file stem, svg)
    note: str = ""


def _cell(score: Score | None) -> str | None:
    if score is None:
        return None
    counts = score.counts()
    text = f"{100 * score.accuracy:.1f}"
    if counts is not None:
        lo, hi = wilson(*counts)
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text


def benchmark_section(bench: str, inputs: Inputs) -> Section:
    models = inputs.tables[bench]
    columns = list(dict.fromkeys(c for row in models.values() for c in row))
    ref_key = inputs.references.get(bench)
    refs = REFERENCES.get(ref_key, {}) if ref_key else {}
    refs = {f"{ref} (published)": v for ref, v in refs.items() if any(c in v for c in columns)}
    # one row per subset (or set), one column per model then the published ones: benchmarks have more
    # subsets than a report has models
    rows = [
        {"": c, **{m: _cell(row.get(c)) for m, row in models.items()}, **{r: v.get(c) for r, v in refs.items()}}
        for c in columns
    ]
    what = "zero-shot: top-1 accuracy (retrieval: recall@1)" if bench == "zeroshot" else f"{bench}: accuracy"
    bars = BarChart(f"{what} with 95% intervals", columns, chance=inputs.chance.get(bench))
    for m, row in models.items():
        series = []
        for c in columns:
            s = row.get(c)
            if s is None:
                series.append(None)
                continue
            counts = s.counts()
            lo, hi = wilson(*counts) if counts else (None, None)
            series.append(Bar(s.accuracy, lo, hi, f"({counts[0]}/{counts[1]})" if counts else ""))
        bars.series[m] = series
    sizes = {c: next((row[c].n for row in models.values() if c in row and row[c].n), None) for c in columns}
    n_note = ", ".join(f"{c} {n}" for c, n in sizes.items() if n)
    title = "Zero-shot" if bench == "zeroshot" else f"Compositional: {bench}"
    note = "accuracy (%) [95% Wilson interval over the items, where the result has the counts]"
    note += f"; n: {n_note}" if n_note else ""
    if refs:
        note += "; published rows as the papers report them (no intervals)"
    table_columns = ["", *models, *refs]
    return Section(title, table_columns, rows, [(bench, bar_chart(bars))], note)


def training_section(inputs: Inputs) -> Section | None:
    if not inputs.runs:
        return None
    loss = LineChart("training loss", y_label="loss")
    evals: dict[str, LineChart] = {}
    rows = []
    for name, run in inputs.runs.items():
        loss.series[name] = run.losses
        for record in run.evals:
            for r in record["results"]:
                key = "acc1" if r.get("task") == "classification" else "image_retrieval_recall@1"
                chart = evals.setdefault(
                    r["dataset"], LineChart(f"zero-shot {key} on {r['dataset']}", y_label=key, percent=True)
                )
                point = (float(record["step"]), _number((r.get("metrics") or {}).get(key)))
                chart.series.setdefault(name, []).append(point)
        last = run.last
        final_loss, speed = _number(last.get("loss")), _number(last.get("samples_per_s"))
        rows.append(
            {
                "run": name,
                "folder": str(run.folder),
                "steps": last.get("step"),
                "final loss": None if math.isnan(final_loss) else f"{final_loss:.4f}",
                "samples/s": None if math.isnan(speed) else f"{speed:.0f}",
            }
        )
    charts = [("training_loss", line_chart(loss))] if any(loss.series.values()) else []
    charts += [(f"zeroshot_{name}", line_chart(c)) for name, c in evals.items()]
    return Section("Training runs", ["run", "folder", "steps", "final loss", "samples/s"], rows, charts)


def sections(inputs: Inputs) -> list[Section]:
    out = [benchmark_section(b, inputs) for b in (["zeroshot"] if "zeroshot" in inputs.tables else [])]
    out += [benchmark_section(b, inputs) for b in inputs.tables if b != "zeroshot"]
    training = training_section(inputs)
    out += [training] if training else []
    # chart files: names safe on any file system, and distinct (x:test and x_test would both be x_test)
    taken: set[str] = set()
    for section in out:
        for i, (name, svg) in enumerate(section.charts):
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "chart"
            unique, k = stem, 2
            while unique in taken:
                unique, k = f"{stem}_{k}", k + 1
            taken.add(unique)
            section.charts[i] = (unique, svg)
    return out


# ---------------------------------------------------------------- HTML and Markdown

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:.8rem}svg.chart{display:block;margin:.5rem 0;max-width:100%;height:auto}
"""

# Run in the browser when the page loads: counts the charts that were laid out with marks in them and
# records every script error, resource error and console.error, so that a headless browser
# (tests/test_report.py) can tell a drawn page from a broken one by reading the DOM.
CHECK = """
window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message||e.type)),true);
const __consoleError=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));__consoleError(...a);};
window.addEventListener('load',()=>{const c=[...document.querySelectorAll('svg.chart')];
const drawn=c.filter(s=>{const b=s.getBBox();return b.width>0&&b.height>0&&s.querySelector('.mark')});
document.body.dataset.charts=c.length;document.body.dataset.drawn=drawn.length;
document.body.dataset.errors=window.__errors.length;});
"""


def _html_table(columns: list[str], rows: list[dict]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('-' if r.get(c) is None else str(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(parts: list[Section], inputs: Inputs, generated: str) -> str:
    sources = "".join(f"<li><b>{escape(n)}</b>: {escape(p)}</li>" for n, p in inputs.sources)
    body = [f"<h1>vlp evaluation report</h1><p class='note'>generated {generated}</p><ul>{sources}</ul>"]
    for s in parts:
        body.append(f"<h2>{escape(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{escape(s.note)}</p>")
        body.append(_html_table(s.table_columns, s.table_rows))
        body += [svg for _, svg in s.charts]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vlp evaluation report</title>"
        f"<style>{STYLE}</style><script>{CHECK}</script></head><body>{''.join(body)}</body></html>\n"
    )


def _md(value: object) -> object:
    """A cell or header that cannot break a Markdown table (| splits cells) or open HTML (<)."""
    return value.replace("|", "\\|").replace("<", "&lt;") if isinstance(value, str) else value


def _markdown_safe(rows: list[dict], columns: list[str]) -> tuple[list[dict], list[str]]:
    return [{_md(k): _md(v) for k, v in r.items()} for r in rows], [_md(c) for c in columns]


def render_markdown(parts: list[Section], inputs: Inputs, generated: str, chart_dir: str) -> str:
    lines = ["# vlp evaluation report", "", f"generated {generated}", ""]
    lines += [f"- **{_md(n)}**: {_md(p)}" for n, p in inputs.sources] + [""]
    for s in parts:
        lines += [f"## {_md(s.title)}", ""]
        if s.note:
            lines += [str(_md(s.note)), ""]
        lines += [markdown_table(*_markdown_safe(s.table_rows, s.table_columns)), ""]
        lines += [f"![{stem}]({chart_dir}/{stem}.svg)" for stem, _ in s.charts] + [""]
    return "\n".join(lines)


def write_report(specs: list[str], out: str | Path) -> tuple[Path, Path]:
    """The HTML page at ``out`` and its Markdown twin (``.md``, charts in ``<stem>_charts/``)."""
    inputs = read_inputs(specs)
    parts = sections(inputs)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chart_dir = out.parent / f"{out.stem}_charts"
    chart_dir.mkdir(exist_ok=True)
    for s in parts:
        for stem, svg in s.charts:
            write_text_atomic(chart_dir / f"{stem}.svg", svg + "\n")
    write_text_atomic(out, render_html(parts, inputs, generated))
    md = out.with_suffix(".md")
    write_text_atomic(md, render_markdown(parts, inputs, generated, chart_dir.name))
    return out, md
