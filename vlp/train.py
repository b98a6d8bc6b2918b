"""The training loop.

    accelerate launch [--config_file launch/accelerate/NAME.yaml] -m vlp.train \
        --config configs/RECIPE.yaml [key=value ...]
    vlp-train --config configs/RECIPE.yaml [key=value ...]      # one process, no launcher

accelerate sets up the processes and, when its config says so, DeepSpeed ZeRO (stage 0-3) and mixed
precision; this module owns the step: forward, the objective over the global batch, a guarded
backward/step that never lets a non-finite loss or gradient reach the weights, the logit-scale clamp,
logging, checkpoints with exact resume, graceful stop on SIGTERM/SIGINT, and the final export.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .config import Config, ConfigError, load_config, to_dict, to_yaml

log = logging.getLogger("vlp.train")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what is left on disk."""


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory so far: accelerator memory on GPUs, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _threads(cfg: Config) -> int:
    if cfg.train.threads:
        return cfg.train.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


def _make_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    launched = "WORLD_SIZE" in os.environ or "RANK" in os.environ  # by accelerate/torchrun, even with 1 process
    cpu_only = not torch.cuda.is_available()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    # Without CUDA there is no NCCL: DeepSpeed and DDP run over gloo (verified on CPU). accelerate
    # starts CPU DDP through the same torchrun launcher as GPU DDP and needs cpu=True to pick it.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if launched and cpu_only else []
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.train.precision]
    return Accelerator(mixed_precision=precision, kwargs_handlers=handlers, cpu=cpu_only and not deepspeed)


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stop_signal: int | None = None

    # ------------------------------------------------------------------ setup

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_signal is None:
            log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)
        self.stop_signal = signum

    def _rank0_then_all(self, fn) -> None:
        """Run ``fn`` on the main process; if it fails, every rank raises (nobody waits forever)."""
        from .distributed import any_rank

        error = None
        if self.acc.is_main_process:
            try:
                fn()
            except Exception as exn:  # noqa: BLE001 - re-raised below on every rank
                error = exn
        self.acc.wait_for_everyone()
        if any_rank(error is not None):
            raise TrainingError(str(error) if error else "the main process failed during setup (see its log)")

    def _resolve_resume(self) -> Path | None:
        from .checkpoint import latest_checkpoint, read_trainer_state

        t = self.cfg.train
        if t.resume == "":
            return None
        path = latest_checkpoint(self.cfg.output_dir) if t.resume == "latest" else Path(t.resume)
        if path is None:
            log.info("train.resume=latest: no checkpoint in %s yet, starting fresh", self.cfg.output_dir)
            return None
        state = read_trainer_state(path)
        for key, now in (("world_size", self.acc.num_processes), ("batch_size", t.batch_size)):
            if state.get(key) != now:
                raise TrainingError(
                    f"cannot resume {path} exactly: it was trained with {key}={state.get(key)}, this run has {now}"
                )
        if state["step"] >= t.max_steps:
            raise TrainingError(f"{path} is at step {state['step']}, already at train.max_steps={t.max_steps}")
        return path

    def _refuse_to_clobber(self) -> None:
        from .checkpoint import list_checkpoints

        found = list_checkpoints(self.cfg.output_dir)
        if found and self.resume_from is None:
            raise TrainingError(
                f"{self.cfg.output_dir} already holds checkpoints (up to step_{found[-1][0]}); continue it with "
                "train.resume=latest, or choose another output_dir"
            )

    def _configure_deepspeed(self) -> None:
        plugin = self.acc.state.deepspeed_plugin
        if plugin is None:
            return
        t = self.cfg.train
        c = plugin.deepspeed_config
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

    def setup(self) -> None:
        cfg, t, d = self.cfg, self.cfg.train, self.cfg.data
        from open_clip_train.scheduler import cosine_lr

        from data_pipelines.loader import StreamingLoader
        from data_pipelines.shapes_world import WorldConfig, generate_world

        from .checkpoint import read_loader_state, read_trainer_state
        from .distributed import world_size
        from .ema import EMATeacher
        from .model import DualEncoder, build_model, count_parameters, param_groups
        from .objectives import Objective

        torch.set_num_threads(_threads(cfg))
        self.acc = acc = _make_accelerator(cfg)
        self.ds = acc.state.deepspeed_plugin is not None
        self.zero_stage = acc.state.deepspeed_plugin.zero_stage if self.ds else None
        self.resume_from = self._resolve_resume()
        self._refuse_to_clobber()
        out = Path(cfg.output_dir)

        def prepare_output():
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(to_yaml(cfg))
            if d.shapes_world:
                generate_world(d.shapes_world, WorldConfig(train_samples=d.shapes_train_samples), log=log.info)

        self._rank0_then_all(prepare_output)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

        o = cfg.objective
        self.objective = Objective(
            o.terms,
            rank=acc.process_index,
            world_size=world_size(),
            local_loss=t.local_loss,
            dcl_sigma=o.dcl_sigma,
            tgc_temperature=o.tgc_temperature,
            proto_target_temperature=o.proto.target_temperature,
        )
        self.proto = bool({"proto", "proto_external"} & set(o.terms))
        self.sentence_teacher = None
        if "proto_external" in o.terms:
            from .protoclip import SentenceTeacher

            try:
                self.sentence_teacher = SentenceTeacher(acc.device)
            except RuntimeError as exn:
                raise TrainingError(str(exn)) from None
        if t.accum_steps > 1 and self.zero_stage == 0 and t.precision == "fp32":
            raise TrainingError(
                "train.accum_steps > 1 under DeepSpeed ZeRO-0 in fp32 is not supported (its plain optimizer "
                "cannot skip a step once micro-batches are counted); use ZeRO-1/2, DDP or mixed precision"
            )
        if self.objective.needs_teacher and self.zero_stage == 3:
            raise TrainingError(
                "the EMA teacher (objective terms tgc, distill) needs whole parameters on every rank: "
                "use ZeRO stage 0-2 (launch/accelerate/gpu_zero2.yaml), not ZeRO-3"
            )
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        built = build_model(cfg.model, augment=d.augment)
        self.open_clip_config = built.open_clip_config
        heads = (o.proto.hidden, o.proto.dim) if self.proto else (0, 0)
        model = DualEncoder(built.model, proto_hidden=heads[0], proto_dim=heads[1])
        total, trainable = count_parameters(model)
        self.teacher = EMATeacher(model, o.ema_decay) if self.objective.needs_teacher else None
        # The fused kernel (CPU and GPU) updates every tensor in one pass instead of a dozen
        # elementwise ops per tensor: about 6% of a CPU step at batch 128 (benchmarks/train_throughput.py).
        self.base_optimizer = torch.optim.AdamW(
            param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=True
        )
        self._configure_deepspeed()
        self.model, self.optimizer = acc.prepare(model, self.base_optimizer)
        self.unwrapped = acc.unwrap_model(self.model)
        self.input_dtype = torch.float32
        if self.ds and t.precision != "fp32":
            self.input_dtype = torch.bfloat16 if t.precision == "bf16" else torch.float16
        self.loader = StreamingLoader(
            d.train or str(Path(d.shapes_world) / "train"),
            preprocess=built.preprocess_train,
            tokenizer=built.tokenizer,
            batch_size=t.batch_size,
            mode=d.mode,
            weights=d.weights,
            num_workers=d.workers,
            seed=t.seed,
            rank=acc.process_index,
            world_size=acc.num_processes,
            shuffle_buffer=d.shuffle_buffer,
            epoch_samples=d.epoch_samples,
            drop_last=True,
            num_negatives=d.negatives if self.objective.needs_negatives else 0,
            negative_types=d.negative_types,
            captions=self.sentence_teacher is not None,
            worker_nice=(19 if acc.device.type == "cpu" else 0) if d.worker_nice is None else d.worker_nice,
        )
        self.episode = None  # ProtoCLIP's current clustering
        self.preprocess_val, self.tokenizer = built.preprocess_val, built.tokenizer
        self.eval_sets = self._read_eval_sets()
        self.last_eval: list[dict] = []
        self.lr_at = cosine_lr(self.base_optimizer, t.lr, min(t.warmup_steps, t.max_steps - 1), t.max_steps)
        self.step = 0
        self.skipped = 0
        self.nonfinite_in_a_row = 0
        if self.resume_from is not None:
            acc.load_state(str(self.resume_from))
            state = read_trainer_state(self.resume_from)
            self.loader.load_state_dict(read_loader_state(self.resume_from, acc.process_index))
            self.step = state["step"]
            self.skipped = state.get("skipped_steps", 0)
            self._load_extra(self.resume_from)
        if acc.is_main_process:
            backend = f"DeepSpeed ZeRO-{self.zero_stage}" if self.ds else str(acc.distributed_type).split(".")[-1]
            print("# vlp config\n" + to_yaml(cfg), flush=True)
            print(
                f"# {backend}, {acc.num_processes} process(es), precision {t.precision}, "
                f"{torch.get_num_threads()} threads/process; model {total / 1e6:.1f}M parameters "
                f"({trainable / 1e6:.1f}M trainable); global batch {t.batch_size * t.accum_steps * acc.num_processes}"
                f" = {t.batch_size} per micro-batch x {t.accum_steps} accumulated x {acc.num_processes} ranks"
                + (f"; resuming from {self.resume_from} (step {self.step})" if self.resume_from else ""),
                flush=True,
            )

    # ------------------------------------------------------------------ one step

    def _grads_finite(self) -> bool:
        from .distributed import any_rank

        bad = any(p.grad is not None and not torch.isfinite(p.grad).all() for p in self.unwrapped.parameters())
        return not any_rank(bad)

    def _backward_and_step(self, loss_for: Callable[[int], torch.Tensor], passes: int = 1) -> bool:
        """Back-propagate ``loss_for(j)`` for j < passes (the gradients add up), then one optimizer
        step; False when a non-finite gradient made the step a no-op."""
        t = self.cfg.train
        if self.ds:
            engine = self.model
            before = engine.skipped_steps
            for j in range(passes):
                # Each pass's loss is the whole batch's: DeepSpeed must not divide it by the passes.
                engine.backward(loss_for(j), scale_wrt_gas=False)
                # DeepSpeed checks gradients itself (and then skips the step) except in ZeRO-0 without
                # mixed precision, where the plain optimizer sees the gradients in p.grad.
                if j == passes - 1 and self.zero_stage == 0 and t.precision == "fp32" and not self._grads_finite():
                    engine.zero_grad()
                    return False
                engine.step()  # counts a micro-batch; the last one steps the optimizer
            return engine.skipped_steps == before
        for j in range(passes):
            sync = contextlib.nullcontext() if j == passes - 1 else self.acc.no_sync(self.model)
            with sync:
                self.acc.backward(loss_for(j))
        if t.precision == "fp16":  # the grad scaler skips overflowing steps itself
            if t.grad_clip:
                self.acc.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            skipped = self.optimizer.step_was_skipped
            self.optimizer.zero_grad(set_to_none=True)
            return not skipped
        # One pass over the gradients: the global norm is non-finite exactly when some gradient is
        # (DDP has already averaged them, so every rank sees the same norm).
        norm = self.acc.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def _clamp_logit_scale(self) -> None:
        """logit_scale <= ln 100 after every step, in the module and in DeepSpeed's fp32 master copy."""
        from .model import MAX_LOGIT_SCALE

        for p in self.unwrapped.logit_scales():
            with torch.no_grad():
                if self.zero_stage == 3:
                    # Partitioned: each rank clamps its own slice (a [1]-shaped scale lives on one rank),
                    # in the fp32 master and in the module's partition.
                    from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

                    local = safe_get_local_fp32_param(p)
                    if local is not None and local.numel():
                        safe_set_local_fp32_param(p, local.clamp(0, MAX_LOGIT_SCALE))
                    p.ds_tensor.data.clamp_(0, MAX_LOGIT_SCALE)
                    continue
                if self.ds and self.zero_stage:
                    from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

                    master = safe_get_full_fp32_param(p)  # a collective
                    if master is not None:
                        safe_set_full_fp32_param(p, master.clamp(0, MAX_LOGIT_SCALE))
                p.data.clamp_(0, MAX_LOGIT_SCALE)

    def _features(self, batch: dict, images: torch.Tensor, texts: torch.Tensor, out: dict, teacher=None):
        """The objective's inputs: this batch's features, its negatives, the teacher's, ProtoCLIP's
        (``teacher``: features already computed for this batch, whose teacher part is reused)."""
        from .objectives import TEACHER_ALL, Features
        from .protoclip import proto_inputs

        b = images.shape[0]
        text = out["text_features"].float()
        f = Features(image=out["image_features"].float(), text=text[:b], scale=out["logit_scale"].float())
        k = batch["neg_text"].shape[1] if self.objective.needs_negatives else 0
        if k:
            f.neg_text = text[b:].reshape(b, k, -1)
            f.neg_mask = batch["neg_mask"].to(images.device)
        if teacher is not None:
            f.teacher_image, f.teacher_text, f.teacher_neg_text = (
                teacher.teacher_image,
                teacher.teacher_text,
                teacher.teacher_neg_text,
            )
        elif self.teacher is not None:
            everything = TEACHER_ALL in self.objective.needs
            precision = self.cfg.train.precision
            low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
            with torch.no_grad(), torch.autocast(images.device.type, dtype=low, enabled=precision != "fp32"):
                t = self.teacher(image=images.float(), text=texts if everything else texts[:b])
            f.teacher_text = t["text_features"][:b].float()
            if everything:
                f.teacher_image = t["image_features"].float()
                if k:
                    f.teacher_neg_text = t["text_features"][b:].float().reshape(b, k, -1)
        if self.proto:
            f.proto = proto_inputs(self.episode, batch["key"], out)
        return f

    def _read_eval_sets(self) -> list:
        from eval_zeroshot.datasets import DatasetError, read_dataset, split_spec

        sets = []
        for spec in self.cfg.eval.zeroshot:
            path, split = split_spec(spec)
            try:
                ds = read_dataset(path, split)
            except DatasetError as exn:
                raise TrainingError(f"eval.zeroshot: {exn}") from None
            ds.name = f"{Path(path).name}:{split}" if ds.split else Path(path).name
            sets.append(ds)
        return sets

    def _evaluate(self) -> list[dict]:
        """Zero-shot metrics of every eval set, the images split across ranks (a collective)."""
        from eval_zeroshot.zeroshot import evaluate

        if not self.eval_sets:
            return []
        clip = self.unwrapped.clip
        was_training = clip.training
        clip.eval()
        # Under ZeRO-3 every forward is a collective: ranks must run the same batches, so each
        # evaluates everything.
        world = 1 if self.zero_stage == 3 else self.acc.num_processes
        rank = 0 if world == 1 else self.acc.process_index
        results = []
        for ds in self.eval_sets:
            metrics = evaluate(
                clip,
                self.preprocess_val,
                self.tokenizer,
                ds,
                self.acc.device,
                self.cfg.eval.batch_size,
                rank=rank,
                world_size=world,
                dtype=self.input_dtype,
            )
            results.append(
                {"dataset": ds.name, "split": ds.split, "task": ds.task, "counts": ds.counts(), "metrics": metrics}
            )
        clip.train(was_training)
        return results

    def _sync_batchnorm_statistics(self) -> None:
        """Under DeepSpeed every rank updates BatchNorm running statistics from its own batches, and a
        checkpoint keeps only rank 0's. Broadcasting rank 0's after each step (as DDP does before each
        forward) keeps the ranks, their EMA teachers and a resumed run identical."""
        if not self.ds or self.acc.num_processes == 1:
            return
        import torch.distributed as dist

        for m in self.unwrapped.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                    dist.broadcast(buf, src=0)

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"].to(self.acc.device, dtype=self.input_dtype, non_blocking=True)
        texts = batch["text"].to(self.acc.device, non_blocking=True)
        if self.objective.needs_negatives:  # [B positives ; B·K negatives], negative (b, k) at B + b·K + k
            neg = batch["neg_text"].to(self.acc.device, non_blocking=True)
            texts = torch.cat([texts, neg.reshape(-1, neg.shape[-1])])
        return images, texts

    def _train_step(self, micro: list[dict]) -> tuple[dict, bool]:
        """One optimizer step over ``micro`` (the micro-batches of this rank).

        With one micro-batch: forward, objective, backward. With k > 1 the contrastive gradient of
        the whole batch is made exact by feature caching: every micro-batch is embedded once without
        gradient, then again with gradient, and each time the objective is computed over all cached
        features with that micro-batch's live ones in their place; the backward passes add up to the
        gradient of the loss over the k·B samples (parameters used directly by the loss, the logit
        scales, take their gradient from the last pass only).
        """
        from .distributed import any_rank
        from .objectives import concat_features

        acc, dbg = self.acc, self.cfg.debug
        inputs = [self._inputs(b) for b in micro]
        self.model.train()
        if len(micro) == 1:
            with acc.autocast():
                out = self.model(image=inputs[0][0], text=inputs[0][1])
            feats = self._features(micro[0], *inputs[0], out)
            losses = self.objective(feats)
            scale = feats.scale

            def loss_for(_j: int) -> torch.Tensor:
                return losses["loss"]

        else:
            rng, cached = [], []
            with torch.no_grad():
                for batch, (images, texts) in zip(micro, inputs, strict=True):
                    rng.append(torch.random.get_rng_state())
                    with acc.autocast():
                        out = self.model(image=images, text=texts)
                    cached.append(self._features(batch, images, texts, out))
            losses = self.objective(concat_features(cached))
            scale = cached[0].scale

            def loss_for(j: int) -> torch.Tensor:
                torch.random.set_rng_state(rng[j])  # the same dropout, if any, as the cached pass
                images, texts = inputs[j]
                with acc.autocast():
                    out = self.model(image=images, text=texts)
                live = self._features(micro[j], images, texts, out, teacher=cached[j])
                parts = [live if i == j else cached[i] for i in range(len(micro))]
                # The scale's gradient comes from one pass, the last: DDP synchronises on that one
                # and expects every parameter to take part in it.
                last = j == len(micro) - 1
                return self.objective(concat_features(parts, scale_from=j if last else None))["loss"]

        loss = losses["loss"]
        if self.step in dbg.nonfinite_loss_steps:
            loss = loss * float("nan")
        if any_rank(not bool(torch.isfinite(loss))):
            applied = False  # nothing was back-propagated: the weights and optimizer state are untouched
        else:
            hook = None
            if self.step in dbg.nonfinite_grad_steps:
                hook = self.unwrapped.clip.logit_scale.register_hook(lambda g: g * float("nan"))
            applied = self._backward_and_step(loss_for, len(micro))
            if hook is not None:
                hook.remove()
        if applied:
            self._clamp_logit_scale()
            self._sync_batchnorm_statistics()
            if self.teacher is not None:
                self.teacher.update(self.unwrapped)
        values = {k: v.detach() for k, v in losses.items()}
        values["loss"] = loss.detach()
        values["logit_scale"] = scale.detach().reshape(())  # the scale this step used (any ZeRO stage)
        return values, applied

    def _proto_episode(self, batches):
        """At an episode boundary: replay the episode's batches without gradient, cluster them, and
        return a fresh iterator positioned at the episode's start."""
        from .protoclip import cluster_episode

        p = self.cfg.objective.proto
        index = (self.step - 1) // p.episode_steps
        start = self.loader.state_dict()
        keys, image_proj, text_proj, captions = [], [], [], []
        self.model.eval()
        with torch.no_grad(), self.acc.autocast():
            for _ in range(p.episode_steps):
                batch = next(batches)
                images = batch["image"].to(self.acc.device, dtype=self.input_dtype)
                out = self.model(image=images, text=batch["text"].to(self.acc.device))
                keys += batch["key"]
                captions += batch.get("caption", [])
                image_proj.append(out["image_proj"].float())
                text_proj.append(out["text_proj"].float())
        external = self.sentence_teacher(captions).to(self.acc.device) if self.sentence_teacher else None
        self.episode = cluster_episode(
            index,
            keys,
            torch.cat(image_proj),
            torch.cat(text_proj),
            p.clusters,
            p.iters,
            self.cfg.train.seed,
            self.acc.process_index,
            external=external,
        )
        self.loader.load_state_dict(start)
        return iter(self.loader)

    # ------------------------------------------------------------------ checkpoints

    def _save(self) -> Path:
        from .checkpoint import save_checkpoint
        from .export import CONFIG_NAME

        state = {
            "skipped_steps": self.skipped,
            "world_size": self.acc.num_processes,
            "batch_size": self.cfg.train.batch_size,
            "max_steps": self.cfg.train.max_steps,
        }
        files = {"config.yaml": to_yaml(self.cfg), CONFIG_NAME: json.dumps(self.open_clip_config, indent=2)}
        return save_checkpoint(
            self.acc,
            self.cfg.output_dir,
            self.step,
            state,
            self.loader.state_dict(),
            files,
            self.cfg.train.keep_last,
            write_extra=self._save_extra,
        )

    def _save_extra(self, folder: Path) -> None:
        """The EMA teacher (same on every rank: the main process writes it) and ProtoCLIP's episode
        (per rank: its labels are for its own samples)."""
        from safetensors.torch import save_file

        if self.teacher is not None and self.acc.is_main_process:
            save_file(self.teacher.state_dict(), folder / "teacher.safetensors")
        if self.episode is not None:
            torch.save(self.episode.state_dict(), folder / f"proto_rank{self.acc.process_index}.pt")

    def _load_extra(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from .protoclip import Episode

        if self.teacher is not None:
            path = folder / "teacher.safetensors"
            if not path.is_file():
                raise TrainingError(f"{folder} has no EMA teacher (teacher.safetensors) to resume tgc/distill from")
            self.teacher.load_state_dict(load_file(path))
        proto = folder / f"proto_rank{self.acc.process_index}.pt"
        if self.proto and proto.is_file():
            self.episode = Episode.from_state_dict(torch.load(proto, map_location="cpu", weights_only=True))

    # ------------------------------------------------------------------ the loop

    def fit(self) -> int:
        from .distributed import any_rank, max_over_ranks
        from .metrics import MetricsLogger

        self.setup()
        cfg, t, acc = self.cfg, self.cfg.train, self.acc
        logger = MetricsLogger(cfg.output_dir, t.max_steps, acc.is_main_process, start_step=self.step)
        losses: list[float] = []
        saved_at = self.step if self.resume_from else -1
        batches = iter(self.loader)
        global_batch = t.batch_size * t.accum_steps * acc.num_processes
        try:
            while self.step < t.max_steps:
                tic = time.perf_counter()
                if self.proto and self.step % self.cfg.objective.proto.episode_steps == 0 and self.step > 0:
                    batches = self._proto_episode(batches)  # ProtoCLIP: cluster the coming episode
                micro = [next(batches) for _ in range(t.accum_steps)]
                data_time = time.perf_counter() - tic
                self.step += 1
                lr = self.lr_at(self.step - 1)
                values, applied = self._train_step(micro)
                reduced = {k: acc.reduce(v.reshape(1), reduction="mean").item() for k, v in values.items()}
                step_time = time.perf_counter() - tic
                if applied:
                    self.nonfinite_in_a_row = 0
                    losses.append(reduced["loss"])
                else:
                    self.skipped += 1
                    self.nonfinite_in_a_row += 1
                    logger.message(
                        f"step {self.step}: non-finite loss or gradient, step skipped "
                        f"({self.nonfinite_in_a_row} in a row, {self.skipped} in all)"
                    )
                    if self.nonfinite_in_a_row >= t.max_nonfinite_steps:
                        last = saved_at if saved_at > 0 else None
                        raise TrainingError(
                            f"{self.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient "
                            f"(train.max_nonfinite_steps={t.max_nonfinite_steps}); stopping at step {self.step}. "
                            + (
                                f"The last good checkpoint is step_{last} in {cfg.output_dir}/checkpoints."
                                if last
                                else "No checkpoint was written yet."
                            )
                        )
                record = {
                    "step": self.step,
                    **{k: v for k, v in reduced.items()},
                    "lr": lr,
                    "samples_per_s": global_batch / step_time,
                    "data_time": data_time,
                    "step_time": step_time,
                    "skipped_steps": self.skipped,
                    "epoch": self.loader.epoch,
                    "time": time.time(),
                    "peak_memory_mb": max_over_ranks(peak_memory_mb(acc.device)),  # the largest rank's
                }
                logger.step(self.step, record, log=self.step % t.log_every == 0 or not applied or self.step == 1)
                if cfg.debug.step_sleep:
                    time.sleep(cfg.debug.step_sleep)
                stop = any_rank(self.stop_signal is not None)
                every = cfg.eval.every
                if self.eval_sets and ((every and self.step % every == 0) or self.step == t.max_steps):
                    self.last_eval = self._evaluate()
                    logger.evaluation(self.step, self.last_eval)
                if self.step % t.save_every == 0 or self.step == t.max_steps or stop:
                    path = self._save()
                    saved_at = self.step
                    if stop:
                        logger.message(
                            f"stopped by a signal at step {self.step}; checkpoint {path}; "
                            f"continue with train.resume=latest (output_dir={cfg.output_dir})"
                        )
                        return EXIT_OK
        except TrainingError as exn:
            logger.message(f"error: {exn}")
            print(f"vlp.train: error: {exn}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            logger.close()
        self._finish(losses)
        return EXIT_OK

    def _finish(self, losses: list[float]) -> None:
        from .checkpoint import latest_checkpoint
        from .export import export_checkpoint

        acc, out = self.acc, Path(self.cfg.output_dir)
        if acc.is_main_process:
            final = latest_checkpoint(out)
            export_dir = export_checkpoint(final, out / "export")
            n = min(50, max(1, len(losses) // 2))
            summary = {
                "steps": self.step,
                "skipped_steps": self.skipped,
                "first_loss_mean": sum(losses[:n]) / max(1, len(losses[:n])) if losses else None,
                "last_loss_mean": sum(losses[-n:]) / max(1, len(losses[-n:])) if losses else None,
                "mean_over_steps": n,
                "checkpoint": str(final),
                "export": str(export_dir),
                "metrics": str(out / "metrics.jsonl"),
                "tensorboard": str(out / "tensorboard"),
                "eval": self.last_eval,
                "config": to_dict(self.cfg),
            }
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if losses:
                print(
                    f"\n# done: {self.step} steps ({self.skipped} skipped); mean loss of the first {n} steps "
                    f"{summary['first_loss_mean']:.4f} -> last {n} steps {summary['last_loss_mean']:.4f}\n"
                    f"#   checkpoint {final}\n#   export     {export_dir} (open_clip local-dir)\n"
                    f"#   metrics    {out / 'metrics.jsonl'}, TensorBoard in {out / 'tensorboard'}",
                    flush=True,
                )
            if self.last_eval:
                from eval_zeroshot.report import zeroshot_table

                print(f"\n# zero-shot evaluation at step {self.step}\n" + zeroshot_table(self.last_eval), flush=True)
        acc.wait_for_everyone()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlp-train",
        description="Train a CLIP-style dual encoder. Under `accelerate launch -m vlp.train` the launch "
        "config chooses processes, DeepSpeed ZeRO stage and hardware; `vlp-train` runs one process.",
        epilog="Overrides use dotted keys, values in YAML: train.max_steps=100 objective.terms='{clip: 1.0}'",
    )
    p.add_argument("--config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("vlp", "data_pipelines"):
        logging.getLogger(ours).setLevel(logging.INFO if rank0 else logging.WARNING)
    # DeepSpeed's ZeRO collectives call APIs that torch marks deprecated, once per step.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    try:
        cfg = load_config(args.config, args.overrides)
        from .model import check_spec

        check_spec(cfg.model)
        if cfg.data.train:
            from data_pipelines.specs import SpecError, parse_sources

            try:
                parse_sources(cfg.data.train, cfg.data.weights)
            except SpecError as exn:
                raise ConfigError(f"data.train: {exn}") from None
    except ConfigError as exn:
        print(f"vlp-train: config error: {exn}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(to_yaml(cfg))
        return EXIT_OK
    try:
        return Trainer(cfg).fit()
    except (TrainingError, ConfigError) as exn:
        print(f"vlp-train: error: {exn}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exn, ConfigError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
