"""The report's Markdown twin: the same sections as the HTML page, each table escaped so that no cell
breaks the table or opens HTML, each chart linked from the chart folder beside it.
"""

from __future__ import annotations

from vlp.common.tables import markdown_table

from .report_inputs import Inputs
from .report_sections import Section


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
