"""Markdown tables, as every report of the project prints them."""

from __future__ import annotations


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``; a missing or None value shows as ``-``.

    Values are printed with ``str``: format numbers before (e.g. round them) to choose their digits.
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
