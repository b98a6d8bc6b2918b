"""Aggregate a study's cell JSONs: mean and 95% interval per recipe and metric, paired tests against the
control, a Markdown table, a summary JSON and plots. Pure reading: runs nothing, so it can be redone
at any time (and for a study that is still running: cells not yet done are listed as missing)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..common.atomic import write_json_atomic
from ..common.tables import markdown_table
from .cells import START, cells_of, result_path
from .spec import Study
from .stats import bootstrap_ci, mcnemar, paired_bootstrap


def _items(record: dict, name: str) -> list[int]:
    return [int(c) for c in record["metrics"][name]["items"]]


def with_pooled(metrics: dict[str, dict], probes: list[str]) -> dict[str, list[int]]:
    """Per-item vectors of every metric, plus ``<probes>/pooled`` (all its subsets, seen and held-out)
    and ``<probes>/pooled_heldout``."""
    out = {k: [int(c) for c in v["items"]] for k, v in metrics.items()}
    for p in probes:
        names = sorted(k for k in out if k.startswith(f"{p}/"))
        out[f"{p}/pooled"] = [c for k in names for c in out[k]]
        held = [k for k in names if k.startswith(f"{p}/heldout/")]
        if held:
            out[f"{p}/pooled_heldout"] = [c for k in held for c in out[k]]
    return out


def load_cells(study: Study) -> tuple[dict, list[str]]:
    """``{(recipe, value): {seed: record}}`` of the finished cells, and the names of those missing."""
    done: dict = defaultdict(dict)
    missing = []
    for cell in cells_of(study):
        path = result_path(study, cell)
        if not path.is_file():
            missing.append(cell.name)
            continue
        record = json.loads(path.read_text())
        record["vectors"] = with_pooled(record["metrics"], list(study.evaluate.probes))
        done[(cell.recipe, cell.value)][cell.seed] = record
    return done, missing


def aggregate(study: Study) -> dict:
    done, missing = load_cells(study)
    groups = []
    for (recipe, value), by_seed in done.items():
        seeds = sorted(by_seed, key=lambda s: -1 if s is None else s)
        names = sorted(set.intersection(*(set(by_seed[s]["vectors"]) for s in seeds)))
        stats = {n: bootstrap_ci([by_seed[s]["vectors"][n] for s in seeds]) for n in names}
        group = {"recipe": recipe, "value": value, "seeds": seeds, "metrics": stats}
        group["seconds"] = [by_seed[s].get("train_seconds") for s in seeds]
        control = done.get((study.control, value))
        if recipe not in (study.control, START) and control:
            paired = [s for s in seeds if s in control]
            if paired:
                group["vs_control"] = {
                    n: {
                        **paired_bootstrap(
                            [by_seed[s]["vectors"][n] for s in paired], [control[s]["vectors"][n] for s in paired]
                        ),
                        # Per seed: pooling items over seeds would count the same item as new evidence.
                        "mcnemar": [mcnemar([by_seed[s]["vectors"][n]], [control[s]["vectors"][n]]) for s in paired],
                        "seeds": paired,
                    }
                    for n in names
                    if all(n in control[s]["vectors"] for s in paired)
                }
        group["curves"] = {s: by_seed[s].get("curve", []) for s in seeds}
        group["diagnostics"] = diagnostics_means([by_seed[s].get("diagnostics") for s in seeds])
        groups.append(group)
    order = {r.name: i for i, r in enumerate(study.recipes)}
    values = {v: i for i, v in enumerate(study.vary_values)}  # the study's order (numbers stay numeric)
    groups.sort(key=lambda g: (g["recipe"] != START, values.get(g["value"], -1), order.get(g["recipe"], -1)))
    return {"study": study.name, "control": study.control, "vary": study.vary_key, "groups": groups, "missing": missing}


def diagnostics_means(records: list[dict | None]) -> dict[str, float]:
    """Mean over seeds of the diagnostics' headline numbers: the text cosine between each relation probe
    caption and its flip, and the relation probe's accuracy on image features before and after pooling."""
    records = [r for r in records if r]
    if not records:
        return {}
    values: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for probes, subsets in r.get("text_cosines", {}).items():
            for subset, c in subsets.items():
                if subset.endswith("replace_rel"):
                    values[f"cosine {probes}/{subset}"].append(c["mean"])
        target = r.get("relation_probe", {}).get("targets", {}).get("relation", {})
        for where in ("spatial", "pooled"):
            if "accuracy" in target.get(where, {}):
                values[f"relation probe, {where}"].append(target[where]["accuracy"])
        if "chance" in target:
            values["relation probe, chance"].append(target["chance"])
    return {k: sum(v) / len(v) for k, v in values.items()}


def _pct(s: dict) -> str:
    return f"{100 * s['mean']:.1f} [{100 * s['lo']:.1f}, {100 * s['hi']:.1f}]"


def _label(g: dict, study: Study) -> str:
    return (
        g["recipe"] if not study.vary_key or g["recipe"] == START else f"{g['recipe']} ({study.vary_key}={g['value']})"
    )


def headline_metrics(study: Study, summary: dict) -> list[str]:
    present = set().union(*(g["metrics"] for g in summary["groups"])) if summary["groups"] else set()
    wanted = [f"zeroshot/{z}" for z in study.evaluate.zeroshot]
    for p in study.evaluate.probes:
        wanted += [f"{p}/pooled", f"{p}/replace_rel", f"{p}/heldout/replace_rel"]
    return [m for m in wanted if m in present]


def tables(study: Study, summary: dict) -> str:
    """The study's Markdown: headline table, every probe, and the paired comparison with the control."""
    groups = summary["groups"]
    if not groups:
        return f"# study {study.name}: no finished cells yet\n"
    lines = [f"# Study `{study.name}`", "", study.description.strip(), ""]
    seeds = sorted({s for g in groups for s in g["seeds"] if s is not None})
    lines += [
        f"Mean over seeds {seeds} with 95% intervals (bootstrap over seeds and items), accuracy in %.",
        f"Cells done: {sum(len(g['seeds']) for g in groups)}; missing: {len(summary['missing'])}.",
        "",
    ]
    head = headline_metrics(study, summary)
    rows = []
    for g in groups:
        row = {"recipe": _label(g, study), "seeds": len(g["seeds"])}
        row.update({m: _pct(g["metrics"][m]) if m in g["metrics"] else "" for m in head})
        rows.append(row)
    lines += ["## Headline", "", markdown_table(rows, ["recipe", "seeds", *head]), ""]
    for p in study.evaluate.probes:
        subsets = sorted({m for g in groups for m in g["metrics"] if m.startswith(f"{p}/") and "pooled" not in m})
        rows = []
        for g in groups:
            row = {"recipe": _label(g, study)}
            row.update({m[len(p) + 1 :]: _pct(g["metrics"][m]) if m in g["metrics"] else "" for m in subsets})
            rows.append(row)
        lines += [f"## Probes `{p}` (every type)", "", markdown_table(rows, list(rows[0])), ""]
    rows = []
    for g in groups:
        for m, c in (g.get("vs_control") or {}).items():
            if m in head:
                rows.append(
                    {
                        "recipe": _label(g, study),
                        "metric": m,
                        "Δ vs control (pts)": f"{100 * c['delta']:+.1f} [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]",
                        "paired seeds": ",".join(str(s) for s in c["seeds"]),
                        "McNemar b/c per seed": " ".join(f"{m['b']}/{m['c']}" for m in c["mcnemar"]),
                        "p per seed": " ".join(f"{m['p']:.2g}" for m in c["mcnemar"]),
                        "separates": "yes" if c["lo"] > 0 or c["hi"] < 0 else "no",
                    }
                )
    if rows:
        lines += [
            f"## Paired against the control `{study.control}`",
            "",
            "Δ: paired bootstrap over the paired seeds and the items (the same draws for both recipes); "
            "'separates' when its 95% interval excludes 0. McNemar: exact, one test per seed. No correction "
            "for the number of comparisons: with many rows, expect about one in twenty to separate by chance.",
            "",
            markdown_table(rows, list(rows[0])),
            "",
        ]
    rows = [{"recipe": _label(g, study), **{k: f"{v:.3f}" for k, v in g["diagnostics"].items()}} for g in groups]
    if any(len(r) > 1 for r in rows):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        lines += [
            "## Diagnostics (mean over seeds): which tower is blind",
            "",
            "Text: mean cosine between each relation probe's caption and its flip (1.0: the text tower cannot "
            "tell them apart). Image: a linear probe's accuracy at reading the relation from frozen image "
            "features of fresh scenes, before and after the tower's pooling.",
            "",
            markdown_table([{c: r.get(c, "") for c in cols} for r in rows], cols),
            "",
        ]
    if summary["missing"]:
        lines += [f"Missing cells: {', '.join(summary['missing'])}", ""]
    return "\n".join(lines)


def write_report(study: Study) -> dict:
    """summary.json, table.md and the plots into the study's results folder; returns the summary."""
    summary = aggregate(study)
    out = Path(study.results)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    (out / "table.md").write_text(tables(study, summary))
    if summary["groups"]:
        from .plots import plot_all

        summary["plots"] = plot_all(study, summary, out)
    return summary
