"""What the ranks agree on, and when: the logged values, skipped steps, the stop signal and peak memory,
kept on the device between agreements and read together, once, in one collective.

A step that neither logs, evaluates nor saves must not stall the host: reading a loss (``.item()``,
``bool(tensor)``) waits for the device to finish everything queued, and an all-reduce per value adds a
collective. So each step appends its values, and whether it reached the weights, as one row of a float64
tensor on the device; every ``train.agree_every`` steps, and on steps that log, evaluate or save, the rows
and the host's own numbers (stop signal, peak memory) are gathered from every rank in one
``all_gather_into_tensor`` and read on the host in one copy. torchtitan and open_clip read their losses
only on logging steps the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..collectives import gather_without_grad


@dataclass
class StepRow:
    """One step, as the host sees it after an agreement."""

    step: int
    values: dict[str, float]  # the mean over ranks
    applied: bool  # the step reached the weights (on every rank: the gradients are reduced)
    lr: float
    data_time: float
    step_time: float


@dataclass
class Agreement:
    rows: list[StepRow]
    stop: bool  # some rank received SIGTERM/SIGINT
    peak_memory_mb: float  # the largest rank's


@dataclass
class StepWindow:
    """The steps since the last agreement: device rows, plus what the host measured itself."""

    device: torch.device
    keys: list[str] = field(default_factory=list)
    _rows: list[torch.Tensor] = field(default_factory=list)
    _host: list[tuple[int, float, float, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        step: int,
        values: dict[str, torch.Tensor],
        applied: bool | torch.Tensor,
        lr: float,
        data_time: float,
        step_time: float,
    ) -> None:
        """Record a step without reading anything from the device."""
        if not self.keys:
            self.keys = sorted(values)
        parts = [values[k].detach().reshape(1).to(torch.float64) for k in self.keys]
        # A host bool (DeepSpeed's own overflow check read it) becomes a fill on the device: no copy.
        flag = applied.reshape(1).to(torch.float64) if isinstance(applied, torch.Tensor) else None
        row = torch.cat(parts)
        row = torch.cat([row, flag if flag is not None else row.new_full((1,), float(applied))])
        self._rows.append(row)
        self._host.append((step, lr, data_time, step_time))

    def agree(self, stop: bool, peak_memory_mb: float) -> Agreement:
        """The collective: every rank calls it at the same step. Empties the window."""
        width = len(self.keys) + 1
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, dtype=torch.float64, device=self.device)
        tail = rows.new_full((1,), 1.0 if stop else 0.0), rows.new_full((1,), float(peak_memory_mb))
        mine = torch.cat([rows, *tail])
        # ranks x (steps * width + 2), read on the host in one copy: the one sync of an agreement
        everyone = gather_without_grad(mine.unsqueeze(0)).tolist()
        out = []
        for i, (step, lr, data_time, step_time) in enumerate(self._host):
            per_rank = [rank[i * width : (i + 1) * width] for rank in everyone]
            values = {k: sum(r[j] for r in per_rank) / len(per_rank) for j, k in enumerate(self.keys)}
            applied = all(r[-1] > 0 for r in per_rank)
            out.append(StepRow(step, values, applied, lr, data_time, step_time))
        self._rows.clear()
        self._host.clear()
        return Agreement(out, any(r[-2] > 0 for r in everyone), max(r[-1] for r in everyone))
