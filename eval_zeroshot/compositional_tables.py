"""Compositional results: a Markdown table beside the published rows, and a PNG bar chart."""

from __future__ import annotations

from pathlib import Path

from vlp.common.tables import markdown_table

from .compositional import REFERENCES


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def table_rows(result: dict) -> tuple[list[dict], list[str]]:
    """Rows (ours first, then the published ones where the benchmark has them), columns in percent."""
    scores = {**result["subsets"], **result.get("pooled", {})}
    columns = list(scores)
    ours = {"model": "ours", **{c: _pct(scores[c]["accuracy"]) for c in columns}}
    refs = REFERENCES.get(result["reference_key"], {}) if result.get("reference_key") else {}
    rows = [ours] + [{"model": name, **{c: values.get(c) for c in columns}} for name, values in refs.items()]
    return rows, ["model", *columns]


def markdown(result: dict) -> str:
    rows, columns = table_rows(result)
    rows = [{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    header = f"{result['benchmark']} accuracy (%), n per column: " + ", ".join(
        f"{k} {v['n']}" for k, v in {**result["subsets"], **result.get("pooled", {})}.items()
    )
    return header + "\n\n" + markdown_table(rows, columns)


def bar_chart(result: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = table_rows(result)
    columns = columns[1:]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(columns) + 2), 4))
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(columns))]
        ax.bar(xs, [row.get(c) or 0 for c in columns], width, label=row["model"])
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(columns))])
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    if result.get("chance") is not None:
        ax.axhline(100 * result["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_title(f"{result['benchmark']}: {result['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
