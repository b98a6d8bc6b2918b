"""The engine seam: every difference between DeepSpeed ZeRO 0-3, DDP / one process, and fp32 / bf16 /
fp16 lives here, so the step and the loop read the same on all of them.

Differences it owns: the accelerator and its process group (gloo without CUDA), DeepSpeed's config
(micro-batch, accumulation, clipping, buffer dtype), backward-and-step with the non-finite check each
engine does its own way, the logit-scale clamp (in DeepSpeed's fp32 master copy too), BatchNorm
statistics across ranks, the input dtype, the teacher's autocast, and which run it refuses.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from ..collectives import broadcast_coalesced
from ..config import TrainConfig
from ..config.schema import LogConfig
from ..model import MAX_LOGIT_SCALE
from ..trackers import accelerate_trackers, project_name
from .errors import TrainingError
from .watchdog import process_group_timeout, set_default_group_timeout

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_accelerator(
    precision: str, collective_timeout_s: float, log: LogConfig | None = None, output_dir: str | None = None
) -> Accelerator:
    """The run's accelerator; with ``log`` and ``output_dir``, its trackers (log.trackers) log under output_dir."""
    launched = "WORLD_SIZE" in os.environ or "RANK" in os.environ  # by accelerate/torchrun, even with 1 process
    cpu_only = not torch.cuda.is_available()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # Without CUDA there is no NCCL: DeepSpeed and DDP run over gloo (verified on CPU). accelerate
    # starts CPU DDP through the same torchrun launcher as GPU DDP and needs cpu=True to pick it.
    # The timeout reaches torch's process group and DeepSpeed's init_distributed alike.
    timeout = process_group_timeout(collective_timeout_s)
    handlers = [InitProcessGroupKwargs(backend="gloo" if cpu_only else None, timeout=timeout)] if launched else []
    set_default_group_timeout(timeout)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    trackers = None
    if log is not None and output_dir is not None and log.trackers:
        trackers = accelerate_trackers(log.trackers, project_name(log.project, output_dir), output_dir)
    return Accelerator(
        mixed_precision=mixed,
        kwargs_handlers=handlers,
        cpu=cpu_only and not deepspeed,
        log_with=trackers,
        project_dir=output_dir,
    )


class Engine:
    def __init__(self, train: TrainConfig, log: LogConfig | None = None, output_dir: str | None = None):
        self.cfg = train
        self.acc = make_accelerator(train.precision, train.collective_timeout_s, log, output_dir)
        plugin = self.acc.state.deepspeed_plugin
        self.deepspeed = plugin is not None
        self.zero_stage: int | None = plugin.zero_stage if plugin is not None else None
        self.model = self.optimizer = self.base_optimizer = self.unwrapped = None  # set by prepare()

    # ------------------------------------------------------------------ what the run is

    @property
    def name(self) -> str:
        return f"DeepSpeed ZeRO-{self.zero_stage}" if self.deepspeed else str(self.acc.distributed_type).split(".")[-1]

    @property
    def device(self) -> torch.device:
        return self.acc.device

    @property
    def input_dtype(self) -> torch.dtype:
        """DeepSpeed casts the module to bf16/fp16, so images must arrive in it; accelerate's autocast
        takes fp32 inputs."""
        if self.deepspeed and self.cfg.precision != "fp32":
            return LOW_PRECISION[self.cfg.precision]
        return torch.float32

    def refuse(self, teacher_terms: list[str]) -> None:
        """Combinations this engine cannot run exactly: stop before anything is built."""
        if self.cfg.accum_steps > 1 and self.zero_stage == 0 and self.cfg.precision == "fp32":
            raise TrainingError(
                "train.accum_steps > 1 under DeepSpeed ZeRO-0 in fp32 is not supported (its plain optimizer "
                "cannot skip a step once micro-batches are counted); use ZeRO-1/2, DDP or mixed precision"
            )
        if teacher_terms and self.zero_stage == 3:
            raise TrainingError(
                f"the EMA teacher of objective.terms.{teacher_terms[0]} needs whole parameters on every rank: "
                "use ZeRO stage 0-2 (launch/accelerate/gpu_zero2.yaml), not ZeRO-3"
            )

    def eval_partition(self) -> tuple[int, int]:
        """(rank, world) for splitting evaluation images. Under ZeRO-3 every forward is a collective:
        ranks must run the same batches, so each evaluates everything."""
        if self.zero_stage == 3:
            return 0, 1
        return self.acc.process_index, self.acc.num_processes

    # ------------------------------------------------------------------ building

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.deepspeed:
            self._configure_deepspeed()
        if not optimizer.defaults.get("fused"):
            raise ValueError("the trainer skips non-finite steps through the fused AdamW's found_inf: use fused=True")
        self.base_optimizer = optimizer  # what DDP's and ZeRO-0's optimizer step runs
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.unwrapped = self.acc.unwrap_model(self.model)

    def _configure_deepspeed(self) -> None:
        t, c = self.cfg, self.acc.state.deepspeed_plugin.deepspeed_config
        # Our loader has no `batch_size` attribute for accelerate to read, so these are set explicitly.
        c["train_micro_batch_size_per_gpu"] = t.batch_size
        c["gradient_accumulation_steps"] = t.accum_steps
        c["train_batch_size"] = t.batch_size * t.accum_steps * self.acc.num_processes
        c["gradient_clipping"] = t.grad_clip
        c["steps_per_print"] = 10**12  # our logger reports progress
        if t.precision != "fp32":
            # DeepSpeed casts parameters but not buffers; BatchNorm (ResNet towers) needs both in one dtype.
            c.setdefault("data_types", {}).setdefault("buffer_dtype", t.precision)
        c.setdefault("bf16", {})
        if isinstance(c["bf16"], dict):
            c["bf16"]["check_grad_overflow"] = True  # skip steps with inf/nan gradients (DeepSpeed's check)

    # ------------------------------------------------------------------ forward

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.acc.autocast()

    def teacher_autocast(self) -> contextlib.AbstractContextManager:
        """The fp32 EMA teacher runs in the student's precision (it is outside accelerate's wrapping)."""
        low = LOW_PRECISION.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=low or torch.float32, enabled=low is not None)

    # ------------------------------------------------------------------ backward and step

    @staticmethod
    def _skip_if(optimizer: torch.optim.Optimizer, nonfinite: torch.Tensor) -> None:
        """Make the next ``optimizer.step()`` a no-op on the device when ``nonfinite`` is true: the fused
        AdamW kernel reads ``found_inf`` (as it does for a GradScaler) and then leaves the weights, its
        moments and its step count untouched, without the host ever reading the flag."""
        optimizer.found_inf = nonfinite.float()

    def backward_and_step(self, loss_for: Callable[[int], torch.Tensor], passes: int = 1) -> bool | torch.Tensor:
        """Back-propagate ``loss_for(j)`` for j < passes (the gradients add up), then one optimizer
        step. Returns whether the step reached the weights: a host bool where the engine already read
        it (DeepSpeed's overflow check), else a 0-dim bool tensor on the device, read by the loop only
        when the ranks agree (vlp/train/agreement.py)."""
        if self.deepspeed:
            return self._deepspeed_step(loss_for, passes)
        for j in range(passes):  # DDP synchronises gradients on the last pass only
            with contextlib.nullcontext() if j == passes - 1 else self.acc.no_sync(self.model):
                self.acc.backward(loss_for(j))
        # One pass over the gradients (unscaled first under fp16): the global norm is non-finite exactly
        # when some gradient is (DDP has already averaged them, so every rank sees the same norm).
        norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or float("inf"))
        applied = torch.isfinite(norm)
        if self.cfg.precision == "fp16":
            # The grad scaler hands the fused AdamW its own found_inf (and lowers the scale); accelerate's
            # step_was_skipped cannot tell, since the fused step always runs: the norm says it.
            self.optimizer.step()
        else:
            self._skip_if(self.base_optimizer, ~applied)
            try:
                self.optimizer.step()
            finally:
                del self.base_optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        return applied

    def _deepspeed_step(self, loss_for: Callable[[int], torch.Tensor], passes: int) -> bool | torch.Tensor:
        engine = self.model
        before = engine.skipped_steps
        # DeepSpeed checks gradients itself (and then skips the step) except in ZeRO-0 without mixed
        # precision, where the plain optimizer steps on p.grad: there the check is ours, on the device.
        plain_optimizer = self.zero_stage == 0 and self.cfg.precision == "fp32"
        applied = None
        for j in range(passes):
            # Each pass's loss is the whole batch's: DeepSpeed must not divide it by the passes.
            engine.backward(loss_for(j), scale_wrt_gas=False)
            if j == passes - 1 and plain_optimizer:
                # The engine has all-reduced the gradients: the norm is the same on every rank.
                grads = [p.grad for p in self.unwrapped.parameters() if p.grad is not None]
                applied = torch.isfinite(torch.nn.utils.get_total_norm(grads))
                self._skip_if(self.base_optimizer, ~applied)
            try:
                engine.step()  # counts a micro-batch; the last one steps the optimizer
            finally:
                if applied is not None:
                    del self.base_optimizer.found_inf
        return applied if applied is not None else engine.skipped_steps == before

    # ------------------------------------------------------------------ after a step

    @torch.no_grad()
    def clamp_logit_scales(self, scales: list[torch.nn.Parameter]) -> None:
        """logit_scale <= ln 100 after every step, in the module and in DeepSpeed's fp32 master copy
        (otherwise the next step would undo the clamp)."""
        for p in scales:
            if self.zero_stage == 3:
                # Partitioned: each rank clamps its own slice (a [1]-shaped scale lives on one rank),
                # in the fp32 master and in the module's partition. (deepspeed is imported only when it
                # runs: importing it costs seconds.)
                from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

                local = safe_get_local_fp32_param(p)
                if local is not None and local.numel():
                    safe_set_local_fp32_param(p, local.clamp(0, MAX_LOGIT_SCALE))
                p.ds_tensor.data.clamp_(0, MAX_LOGIT_SCALE)
                # A scale below stage3_param_persistence_threshold stays whole on every rank and was
                # gathered again after the step: the forward reads this copy (empty when released).
                p.data.clamp_(0, MAX_LOGIT_SCALE)
                continue
            # ZeRO-1/2 (and DeepSpeed's bf16 optimizer): this rank's slice of the fp32 master, in place.
            # (safe_get_full_fp32_param would assemble the whole scale with an all-reduce every step.)
            mapping = getattr(p, "_hp_mapping", None)
            if mapping is not None:
                mapping.get_hp_fragment().data.clamp_(0, MAX_LOGIT_SCALE)
            p.data.clamp_(0, MAX_LOGIT_SCALE)

    def sync_batchnorm_stats(self) -> None:
        """Make every rank's BatchNorm running statistics rank 0's, in one broadcast. Under DeepSpeed each
        rank updates them from its own batches (DDP broadcasts them itself before each forward) and a
        checkpoint keeps rank 0's. Training never reads them (BatchNorm normalises with the batch's
        statistics, the EMA teacher too), so they are made equal only before something does: evaluation,
        ProtoCLIP's episode embedding (eval mode) and a save. Rank 0's own statistics evolve from its own
        batches either way, so this gives what a broadcast after every step gave."""
        if not self.deepspeed or self.acc.num_processes == 1:
            return
        stats = [
            buf
            for m in self.unwrapped.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        ]
        broadcast_coalesced(stats, src=0)

    def peak_memory_mb(self) -> float:
        """This process's peak memory so far: accelerator memory on GPUs, resident set size on CPU."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
