"""Results as JSON-ready records and a Markdown table."""

from __future__ import annotations

import math

from vlp.common.tables import markdown_table


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def zeroshot_table(results: list[dict]) -> str:
    """One row per dataset; the metric columns are those any dataset has, in a fixed order."""
    order = ["acc1", "acc5", "mean_per_class_recall"] + [
        f"{kind}_retrieval_recall@{k}" for k in (1, 5, 10) for kind in ("image", "text")
    ]
    present = [m for m in order if any(m in r["metrics"] for r in results)]
    columns = ["dataset", "split", "n", *present]
    rows = [{"dataset": r["dataset"], "split": r["split"], "n": r["counts"]["images"], **r["metrics"]} for r in results]
    return markdown_table([{c: fmt(r.get(c)) for c in columns} for r in rows], columns)
