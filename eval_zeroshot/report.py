"""``vlp-eval report``: one self-contained HTML page (and a Markdown twin) comparing any number of
results: ``vlp-eval zeroshot`` and ``vlp-eval compositional`` JSONs, and training runs (their
``metrics.jsonl`` / ``eval.jsonl``).

Per benchmark a table (a row per subset, a column per model, then the published columns the compositional
evaluator carries) and
a bar chart with 95% intervals (Wilson's, binomial over the items: one run's sampling error, not the
spread over seeds); per training run its loss curve and zero-shot curves. A result is named by its model
(``local-dir:runs/demo/export`` -> ``runs/demo/export``) or by ``NAME=PATH`` on the command line, so one
model's zero-shot and compositional files land in one column.

The parts: reading the inputs (:mod:`eval_zeroshot.report_inputs`), building the sections
(:mod:`eval_zeroshot.report_sections`), and writing them as HTML (:mod:`eval_zeroshot.report_html`) and
Markdown (:mod:`eval_zeroshot.report_markdown`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from vlp.common.atomic import write_text_atomic

# Re-exported: the CLIs (vlp-eval report, vlp-study) import ReportError and write_report from here.
from .report_html import render_html
from .report_inputs import Inputs, ReportError, Run, Score, read_inputs
from .report_markdown import render_markdown
from .report_sections import Section, benchmark_section, sections, training_section

__all__ = [
    "Inputs",
    "ReportError",
    "Run",
    "Score",
    "Section",
    "benchmark_section",
    "read_inputs",
    "render_html",
    "render_markdown",
    "sections",
    "training_section",
    "write_report",
]


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
