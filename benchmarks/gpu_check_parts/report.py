"""The GPU check's results: MFU and the ratios (to open_clip's trainer, and of the quiet hot loop to the
run that logs every step) filled into each run, the headline, the settings and definitions recorded with
them, and ``gpu_check.json`` with its Markdown table ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .plan import decoder_key_exists

# What each reported figure means, recorded in gpu_check.json beside the figures.
DEFINITIONS = {
    "samples_per_s": "median over the steps after the warm-up (vlp: global batch / step time per step; "
    "open_clip: its per-step log)",
    "mfu": "samples_per_s x train FLOPs per sample / peak",
    "peak_memory_mb": "GPU: torch.cuda.max_memory_allocated (largest rank); CPU: the process's max RSS",
    "data_time_share": "median time blocked in next(loader) / median step time, after the warm-up; "
    "with data.decoder=device the JPEG decode runs on the device inside the step (step time, "
    "not data_time)",
    "loader_images_per_core_s": "vlp's metrics.jsonl: images/s one loader worker core makes (CPU time "
    "of the last batch), median after the warm-up",
    "ratio_vs_open_clip": "samples_per_s / open_clip trainer's samples_per_s",
}


def settings(args: argparse.Namespace, flops: dict) -> dict:
    """The settings every configuration ran with, as gpu_check.json records them."""
    return {
        "model": args.model,
        "image_size": flops["image_size"][0],
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "precision": args.precision,
        "processes": "1 (the 2-rank run: 2)",
        "gpus": args.gpus,
        "decoders": args.decoders,
        "decoder_key": decoder_key_exists(),
        "vlp_set": args.vlp_set,
        "run_timeout_s": args.run_timeout_s,
        "budget_s": args.budget_s,
    }


def _fmt(value, digits: int):
    # rounded for the table; None stays None (printed as "-")
    return None if value is None else round(value, digits)


def finish_rows(runs: list[dict], flops: dict, device: dict) -> None:
    """MFU and the ratio to open_clip's trainer, in place."""
    train_flops = flops["train_gflops_per_sample"] * 1e9 if flops else None
    peak = device["peak_tflops"]
    for r in runs:
        sps = r.get("samples_per_s")
        r["achieved_tflops"] = sps * train_flops / 1e12 if sps and train_flops else None
        r["mfu"] = r["achieved_tflops"] / peak if r["achieved_tflops"] and peak else None
    peer = next((r for r in runs if r["trainer"] == "open_clip" and r.get("samples_per_s")), None)
    for r in runs:
        sps = r.get("samples_per_s")
        r["ratio_vs_open_clip"] = sps / peer["samples_per_s"] if sps and peer and r is not peer else None
    # The hot loop against the same backend and decoder logging every step: what logging costs.
    for r in runs:
        if r.get("audit") and r.get("steps_per_s_wall"):
            logged = next(
                (
                    o
                    for o in runs
                    if o.get("backend") == "zero2"
                    and o.get("decoder") == r.get("decoder")
                    and not o.get("audit")
                    and o.get("processes", 1) == 1
                    and o.get("steps_per_s_wall")
                ),
                None,
            )
            r["steps_per_s_logging_every_step"] = logged["steps_per_s_wall"] if logged else None
            r["ratio_quiet_vs_logging"] = r["steps_per_s_wall"] / logged["steps_per_s_wall"] if logged else None


def headline(runs: list[dict]) -> dict | None:
    """The fastest vlp configuration against open_clip's trainer."""
    ours = [
        r
        for r in runs
        if r["trainer"] == "vlp" and r.get("samples_per_s") and not r.get("audit") and r.get("processes", 1) == 1
    ]
    peer = next((r for r in runs if r["trainer"] == "open_clip" and r.get("samples_per_s")), None)
    if not ours:
        return None
    best = max(ours, key=lambda r: r["samples_per_s"])
    return {
        "best_vlp": best["name"],
        "samples_per_s": best["samples_per_s"],
        "mfu": best.get("mfu"),
        "open_clip_samples_per_s": peer["samples_per_s"] if peer else None,
        "ratio_vs_open_clip": best.get("ratio_vs_open_clip"),
    }


COLUMNS = [
    "configuration",
    "samples/s",
    "MFU %",
    "TFLOP/s",
    "peak memory MB",
    "data_time share",
    "loader img/s per core",
    "vs open_clip",
    "status",
]


def table_rows(runs: list[dict]) -> list[dict]:
    return [
        {
            "configuration": r["name"],
            "samples/s": _fmt(r.get("samples_per_s"), 1),
            "MFU %": _fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, 2),
            "TFLOP/s": _fmt(r.get("achieved_tflops"), 3),
            "peak memory MB": _fmt(r.get("peak_memory_mb"), 0),
            "data_time share": _fmt(r.get("data_time_share"), 3),
            "loader img/s per core": _fmt(r.get("loader_images_per_core_s"), 0),
            "vs open_clip": _fmt(r.get("ratio_vs_open_clip"), 3),
            "status": r["status"],
        }
        for r in runs
    ]


def markdown(result: dict) -> str:
    from vlp.common.tables import markdown_table

    s, f, d = result["settings"], result["flops"], result["device"]
    lines = [
        f"# GPU check{' (dry run, CPU)' if result['dry_run'] else ''}",
        "",
        f"{d['name']}; {f['model']} at {s['image_size']} px, {s['precision']}, batch {s['batch_size']}, "
        f"{s['steps']} steps (medians over the last {s['steps'] - s['warmup']}), "
        f"{s['workers']} loader workers, 1 process.",
        f"FLOPs per trained sample: {f['train_gflops_per_sample']} G (3 x forward, open_clip's profiler); "
        f"peak {d['peak_tflops'] or '-'} TFLOP/s ({d['peak_source']}).",
        "",
        markdown_table(table_rows(result["runs"]), COLUMNS),
        "",
    ]
    for r in result["runs"]:
        audit = r.get("sync_audit")
        if audit:
            owners = ", ".join(f"{k} {v:.2f}" for k, v in audit["syncs_per_quiet_step_by_owner"].items()) or "none"
            lines.append(
                f"Hot loop ({r['name']}): synchronising CUDA calls per step that neither logs nor saves: {owners} "
                f"(sync debug mode {'on' if audit['cuda_sync_debug_mode'] else 'unavailable: CPU'}); "
                f"{_fmt(r.get('steps_per_s_wall'), 2)} steps/s logging at the first and last step against "
                f"{_fmt(r.get('steps_per_s_logging_every_step'), 2)} logging every step "
                f"(ratio {_fmt(r.get('ratio_quiet_vs_logging'), 3)})."
            )
            lines.append("")
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write_results(out: Path, result: dict) -> None:
    from vlp.common.atomic import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "gpu_check.json", result)
    write_text_atomic(out / "gpu_check.md", markdown(result))
