"""The report's sections, built from its :class:`~eval_zeroshot.report_inputs.Inputs`: per benchmark a
table (a row per subset, a column per model, then the published columns) and a bar chart with Wilson's
95% intervals; for the training runs a table, the loss curve and the zero-shot curves. The charts get
file names that are safe and distinct, for the Markdown twin's chart folder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vlp.common.intervals import wilson

from .compositional import REFERENCES
from .report_inputs import Inputs, Score, number
from .svg_charts import Bar, BarChart, LineChart, bar_chart, line_chart


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
                point = (float(record["step"]), number((r.get("metrics") or {}).get(key)))
                chart.series.setdefault(name, []).append(point)
        last = run.last
        final_loss, speed = number(last.get("loss")), number(last.get("samples_per_s"))
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
