"""The study's headline: relations gained against zero-shot kept, for every recipe of the main study
and the relations study (each with its own budget), from their committed summaries. Prints a table and
writes benchmarks/results/study/headline.{json,png}. Run `vlp-study --report-only` on both first.

Usage: python benchmarks/study_headline.py [--results DIR] [--json FILE]
Smallest (it is small already; a check that it runs, writing elsewhere; tests/test_benchmarks.py runs it):
  python benchmarks/study_headline.py --json /tmp/headline.json"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlp.common.atomic import write_json_atomic
from vlp.common.tables import markdown_table

ROOT = Path(__file__).resolve().parent / "results" / "study"
STUDIES = {"main": "300 steps x 64", "relations": "1500 steps x 32"}
X, YS = "zeroshot/heldout", ("shapes/replace_rel", "shapes/heldout/replace_rel")


def points(root: Path = ROOT) -> list[dict]:
    out = []
    for study, budget in STUDIES.items():
        path = root / study / "summary.json"
        if not path.is_file():
            continue
        for g in json.loads(path.read_text())["groups"]:
            if g["recipe"] == "start" and study != "main":
                continue  # the same starting model: shown once
            if all(m in g["metrics"] for m in (X, *YS)):
                name = g["recipe"] if g["recipe"] == "start" else f"{g['recipe']} ({budget})"
                out.append({"recipe": name, "seeds": len(g["seeds"]), **{m: g["metrics"][m] for m in (X, *YS)}})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT), help="the folder of the studies' summaries (STUDY/summary.json)")
    p.add_argument("--json", default=str(ROOT / "headline.json"), help="where to write (the plot beside it, .png)")
    args = p.parse_args(argv)
    out = Path(args.json)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = points(Path(args.results))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    for ax, y in zip(axes, YS, strict=True):
        for r in rows:
            xs, ys = r[X], r[y]
            ax.errorbar(
                100 * xs["mean"], 100 * ys["mean"],
                xerr=[[100 * (xs["mean"] - xs["lo"])], [100 * (xs["hi"] - xs["mean"])]],
                yerr=[[100 * (ys["mean"] - ys["lo"])], [100 * (ys["hi"] - ys["mean"])]],
                marker="s" if r["recipe"] == "start" else "o", capsize=3, label=f"{r['recipe']}, n={r['seeds']}",
            )  # fmt: skip
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=f"{X} (%)", title=y.replace("shapes/", "shapes probes: "))
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Relations gained against zero-shot kept (mean over seeds, 95% intervals over seeds and items)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=110)
    table = [
        {"recipe": r["recipe"], "seeds": r["seeds"], **{m: f"{100 * r[m]['mean']:.1f}" for m in (X, *YS)}} for r in rows
    ]
    print(markdown_table(table, ["recipe", "seeds", X, *YS]))
    write_json_atomic(out, {"points": rows})
    print(f"\nplot: {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
