"""The end of a run: export the last checkpoint, write summary.json, print what was made."""

from __future__ import annotations

from pathlib import Path

from eval_zeroshot.zeroshot_tables import zeroshot_table

from ..checkpoint import latest_checkpoint
from ..common.atomic import write_json_atomic
from ..config import to_dict
from ..export import export_checkpoint
from .setup import Run


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def finish(run: Run, losses: list[float]) -> None:
    acc, out, counters = run.engine.acc, Path(run.cfg.output_dir), run.counters
    if acc.is_main_process:
        final = latest_checkpoint(out)
        export_dir = export_checkpoint(final, out / "export")
        n = min(50, max(1, len(losses) // 2))
        summary = {
            "steps": counters.step,
            "skipped_steps": counters.skipped_steps,
            "first_loss_mean": _mean(losses[:n]),
            "last_loss_mean": _mean(losses[-n:]),
            "mean_over_steps": n,
            "checkpoint": str(final),
            "export": str(export_dir),
            "metrics": str(out / "metrics.jsonl"),
            "tensorboard": str(out / "tensorboard") if "tensorboard" in run.cfg.log.trackers else None,
            "trackers": list(run.cfg.log.trackers),
            "eval": run.evaluator.last,
            "config": to_dict(run.cfg),
        }
        write_json_atomic(out / "summary.json", summary)
        if losses:
            print(
                f"\n# done: {counters.step} steps ({counters.skipped_steps} skipped); mean loss of the first {n} "
                f"steps {summary['first_loss_mean']:.4f} -> last {n} steps {summary['last_loss_mean']:.4f}\n"
                f"#   checkpoint {final}\n#   export     {export_dir} (open_clip local-dir)\n"
                f"#   metrics    {out / 'metrics.jsonl'}"
                + (f", TensorBoard in {out / 'tensorboard'}" if "tensorboard" in run.cfg.log.trackers else ""),
                flush=True,
            )
        if run.evaluator.last:
            table = zeroshot_table(run.evaluator.last)
            print(f"\n# zero-shot evaluation at step {counters.step}\n" + table, flush=True)
    acc.wait_for_everyone()
