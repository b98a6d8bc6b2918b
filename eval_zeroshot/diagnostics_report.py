"""The diagnosis as the CLI prints it: a Markdown table of the text tower (compositional accuracy and
caption/negative cosines per subset), one of the relation probe (accuracy, interval, chance and ceiling
per target and feature set), then the verdict's sentence.
"""

from __future__ import annotations


def _f(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def report(result: dict) -> str:
    """Markdown tables (text tower, relation probe) and the verdict, as the CLI prints them."""
    from vlp.common.tables import markdown_table

    scores = result["compositional"]
    rows = [
        {
            "subset": name,
            "accuracy": _f(100 * scores[name]["accuracy"], 1) if name in scores else None,
            "cosine mean": _f(t["mean"]),
            "std": _f(t["std"]),
            "min": _f(t["min"]),
            "max": _f(t["max"]),
            "n": t["n"],
        }
        for name, t in result["text"].items()
    ]
    text = markdown_table(rows, ["subset", "accuracy", "cosine mean", "std", "min", "max", "n"])
    probe_rows = []
    for target, rec in result["probe"]["targets"].items():
        for kind in ("spatial", "pooled"):
            p = rec[kind]
            probe_rows.append(
                {
                    "target": target,
                    "features": kind,
                    "dims": p.get("dims"),
                    "accuracy": _f(p.get("accuracy"), 3) if "accuracy" in p else "unavailable",
                    "95% CI": f"{p['ci95'][0]:.3f}–{p['ci95'][1]:.3f}" if "ci95" in p else None,
                    "chance": _f(rec["chance"], 3),
                    "ceiling": rec["ceiling"],
                    "weight decay": p.get("weight_decay"),
                }
            )
    cols = ["target", "features", "dims", "accuracy", "95% CI", "chance", "ceiling", "weight decay"]
    probe = markdown_table(probe_rows, cols)
    return f"{text}\n\n{probe}\n\n{result['verdict']['sentence']}"
