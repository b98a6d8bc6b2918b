"""The report as one self-contained HTML page: its style and charts inline, and a small script that
records whether the charts were drawn and any error, for the headless-browser test to read from the DOM.
"""

from __future__ import annotations

from html import escape

from .report_inputs import Inputs
from .report_sections import Section

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
