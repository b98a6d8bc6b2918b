"""The study's pictures: accuracy per probe type per recipe (with intervals), accuracy against training
steps, and the trade-off of the headline metrics (what a recipe gains against what it costs)."""

from __future__ import annotations

from pathlib import Path

from .cells import START
from .spec import Study


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(s: dict) -> tuple[float, float]:
    return 100 * (s["mean"] - s["lo"]), 100 * (s["hi"] - s["mean"])


def _order(names: list[str]) -> list[str]:
    """Seen subsets first, then their held-out twins, each group alphabetical."""
    return sorted(names, key=lambda m: ("heldout/" in m, m))


def probe_bars(study: Study, summary: dict, path: Path) -> None:
    """One panel per metric family (zero-shot, then each probe set), a bar per recipe with its interval."""
    plt = _plt()
    groups = summary["groups"]
    panels = [("zero-shot", [f"zeroshot/{z}" for z in study.evaluate.zeroshot])]
    for p in study.evaluate.probes:
        subsets = {m for g in groups for m in g["metrics"] if m.startswith(f"{p}/") and "pooled" not in m}
        panels.append((f"probes: {p}", _order(list(subsets))))
    panels = [(t, [m for m in ms if any(m in g["metrics"] for g in groups)]) for t, ms in panels]
    panels = [(t, ms) for t, ms in panels if ms]
    widest = max(len(ms) for _, ms in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(7, 1.0 * widest + 2), 3.0 * len(panels)), squeeze=False)
    width = 0.8 / len(groups)
    for ax, (title, metrics) in zip(axes[:, 0], panels, strict=True):
        for i, g in enumerate(groups):
            xs = [j + (i - (len(groups) - 1) / 2) * width for j, m in enumerate(metrics) if m in g["metrics"]]
            stats = [g["metrics"][m] for m in metrics if m in g["metrics"]]
            lo, hi = zip(*(_err(s) for s in stats), strict=True)
            label = g["recipe"] if not study.vary_key or g["recipe"] == START else f"{g['recipe']} {g['value']}"
            ax.bar(
                xs, [100 * s["mean"] for s in stats], width, yerr=[lo, hi], capsize=2,
                label=f"{label} (n={len(g['seeds'])})",
            )  # fmt: skip
        if title.startswith("probes"):
            ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(metrics)), [m.split("/", 1)[1] for m in metrics], rotation=20, ha="right")
        ax.set(ylabel="accuracy (%)", ylim=(0, 105), title=title)
    axes[0][0].legend(fontsize=7, ncol=min(4, len(groups)), loc="lower left")
    fig.suptitle(f"study {study.name}: mean over seeds, 95% intervals (bootstrap over seeds and items)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def steps_plot(study: Study, summary: dict, path: Path) -> bool:
    """Zero-shot accuracy during training (each cell's evaluations, mean over seeds) and, when the study
    varies a numeric setting, the headline metrics against it."""
    plt = _plt()
    groups = [g for g in summary["groups"] if g["recipe"] != START]
    curves = [g for g in groups if any(g["curves"].values())]
    numeric = (
        study.vary_key and all(isinstance(v, int | float) for v in study.vary_values) and len(study.vary_values) > 1
    )
    if not curves and not numeric:
        return False
    fig, axes = plt.subplots(
        1, 2 if numeric and curves else 1, figsize=(11 if numeric and curves else 6, 4), squeeze=False
    )
    ax_i = 0
    if curves:
        ax = axes[0][ax_i]
        ax_i += 1
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, g in enumerate(curves):
            by_step: dict[tuple[int, str], list[float]] = {}
            for curve in g["curves"].values():
                for step, name, acc in curve:
                    by_step.setdefault((step, name), []).append(acc)
            for name in sorted({n for _, n in by_step}):
                pts = sorted((s, sum(v) / len(v)) for (s, n), v in by_step.items() if n == name)
                label = f"{g['recipe']}{'' if g['value'] is None else ' ' + str(g['value'])} {name}"
                style = {"color": colours[k % len(colours)], "ls": "--" if name == "test" else "-"}
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label, **style)
        ax.set(xlabel="training step", ylabel="zero-shot acc1", title="zero-shot during training (mean over seeds)")
        ax.legend(fontsize=6)
    if numeric:
        ax = axes[0][ax_i]
        head = study.evaluate.headline or {}
        names = [m for m in (head.get("gain"), head.get("cost")) if m] or [f"{p}/pooled" for p in study.evaluate.probes]
        for recipe in [r.name for r in study.recipes]:
            rows = sorted((g["value"], g["metrics"]) for g in groups if g["recipe"] == recipe)
            for m in names:
                pts = [(v, ms[m]) for v, ms in rows if m in ms]
                if pts:
                    ax.errorbar(
                        [v for v, _ in pts],
                        [100 * s["mean"] for _, s in pts],
                        yerr=list(zip(*(_err(s) for _, s in pts), strict=True)),
                        marker="o",
                        capsize=3,
                        label=f"{recipe} {m}",
                    )
        ax.set(xlabel=study.vary_key, ylabel="accuracy (%)", title="against the varied setting (95% intervals)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def tradeoff_plot(study: Study, summary: dict, path: Path) -> bool:
    head = study.evaluate.headline
    if not head:
        return False
    gain, cost = head["gain"], head["cost"]
    groups = [g for g in summary["groups"] if gain in g["metrics"] and cost in g["metrics"]]
    if not groups:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for g in groups:
        x, y = g["metrics"][cost], g["metrics"][gain]
        label = g["recipe"] if g["value"] is None else f"{g['recipe']} {g['value']}"
        ax.errorbar(
            100 * x["mean"],
            100 * y["mean"],
            xerr=[[_err(x)[0]], [_err(x)[1]]],
            yerr=[[_err(y)[0]], [_err(y)[1]]],
            marker="s" if g["recipe"] == START else "o",
            capsize=3,
            label=f"{label} (n={len(g['seeds'])})",
        )
    ax.set(xlabel=f"{cost} (%)", ylabel=f"{gain} (%)", title="what a recipe gains against what it keeps")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_all(study: Study, summary: dict, out: Path) -> list[str]:
    made = []
    probe_bars(study, summary, out / "probes.png")
    made.append("probes.png")
    if steps_plot(study, summary, out / "steps.png"):
        made.append("steps.png")
    if tradeoff_plot(study, summary, out / "tradeoff.png"):
        made.append("tradeoff.png")
    return made
