"""Rank-0 logging: ``metrics.jsonl`` (one object per logged step), ``eval.jsonl``, a progress line, and
the experiment trackers of ``log.trackers`` (vlp/trackers.py), which get the same numbers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .trackers import EVAL_TABLE, Trackers, eval_table


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricsLogger:
    """Writes only on the main process; other ranks get a logger that does nothing. ``trackers`` (the
    main process's) receive what the files do."""

    def __init__(
        self,
        output_dir: str | Path,
        total_steps: int,
        enabled: bool,
        start_step: int = 0,
        trackers: Trackers | None = None,
    ):
        self.enabled = enabled
        self.total = total_steps
        self.start_step = start_step
        self.output_dir = Path(output_dir)
        self.started = time.perf_counter()
        self._bar = None
        self._file = None
        self._trackers = trackers if enabled else None
        if not enabled:
            return
        out = Path(output_dir)
        self._file = open(out / "metrics.jsonl", "a", buffering=1)
        if sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.started) / done * (self.total - step)

    def step(self, step: int, record: dict, log: bool) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.0f}", refresh=False)
        if not log:
            return
        self._file.write(json.dumps(record) + "\n")
        if self._trackers is not None:
            scalars = {f"train/{k}": v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self._trackers.log(scalars, step)
        if self._bar is None:
            print(
                f"step {step}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"scale {record['logit_scale']:.1f}  {record['samples_per_s']:.0f} samples/s  "
                f"ETA {_duration(self.eta(step)) if step > self.start_step else '?'}",
                flush=True,
            )

    def evaluation(self, step: int, results: list[dict]) -> None:
        """Zero-shot metrics: one record in eval.jsonl, scalars and a table for the trackers, a line per set."""
        if not self.enabled or not results:
            return
        flat = {f"eval/{r['dataset']}/{k}": v for r in results for k, v in r["metrics"].items()}
        with open(self.output_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "results": results}) + "\n")
        if self._trackers is not None:
            self._trackers.log(flat, step)
            self._trackers.table(EVAL_TABLE, *eval_table(step, results), step=step)
        for r in results:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items() if k in ("acc1", "acc5") or "@1" in k)
            self.message(f"eval step {step}  {r['dataset']}: {shown}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None
        if self._file is not None:
            self._file.close()
