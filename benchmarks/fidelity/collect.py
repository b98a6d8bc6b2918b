"""Collect one fine-tune of benchmarks/fidelity/run.sh into a result JSON, or (--table DIR) print the
table of all results and plot the loss curves of the runs that differ only in negative sampling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_machine.py

from _machine import machine  # noqa: E402

from vlp.common.atomic import write_json_atomic  # noqa: E402
from vlp.common.tables import markdown_table  # noqa: E402

PROBES = ("replace_rel", "swap_att", "swap_obj", "heldout/replace_rel", "heldout/swap_att")


def collect(name: str, run: Path, out: Path, overrides: list[str]) -> None:
    summary = json.loads((run / "summary.json").read_text())
    shapes = json.loads((run / "shapes.json").read_text())
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    heldout = next(r["metrics"]["acc1"] for r in summary["eval"] if r["dataset"].endswith("heldout"))
    cfg = summary["config"]
    result = {
        "name": name,
        "overrides": overrides,
        "seed": cfg["train"]["seed"],
        "steps": summary["steps"],
        "batch_size": cfg["train"]["batch_size"],
        "grad_clip": cfg["train"]["grad_clip"],
        "negative_sampling": cfg["data"]["negative_sampling"],
        "neighbours": cfg["data"]["neighbours"],
        "terms": cfg["objective"]["terms"],
        "first_loss_mean": summary["first_loss_mean"],
        "last_loss_mean": summary["last_loss_mean"],
        "zeroshot_heldout": heldout,
        "probes": {k: v["accuracy"] for k, v in shapes["subsets"].items()},
        "loss_curve": [(r["step"], r["loss"]) for r in losses],
        "machine": machine(),
    }
    write_json_atomic(out, result)


def table(folder: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    rows = []
    for r in results:
        row = {"run": r["name"], "clip": r["grad_clip"], "negatives": r["negative_sampling"]}
        row.update(twins=r["neighbours"], loss=f"{r['first_loss_mean']:.3f} → {r['last_loss_mean']:.3f}")
        row["zero-shot heldout"] = round(r["zeroshot_heldout"], 3)
        row.update({p: round(100 * r["probes"][p], 1) for p in PROBES if p in r["probes"]})
        rows.append(row)
    print(markdown_table(rows, list(rows[0])))
    curves = {r["name"]: r["loss_curve"] for r in results if r["name"] in ("degla_random", "degla_fixed")}
    if len(curves) == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, curve in curves.items():
            steps, loss = zip(*curve, strict=True)
            ax.plot(steps, loss, label=name.replace("degla_", "negatives: "))
        ax.set(xlabel="step", ylabel="DeGLA loss", title="DeGLA fine-tune on the shapes world, seed 0")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "degla_negative_sampling.png", dpi=120)
        print(f"\nplot: {folder / 'degla_negative_sampling.png'}")


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        table(Path(sys.argv[2]))
    else:
        collect(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
