"""Range and consistency checks that types cannot express; the objective's needs come from the
term registry."""

from __future__ import annotations

import difflib
from pathlib import Path

from data_pipelines.loader import DECODERS, MODES, NEGATIVE_SAMPLING
from data_pipelines.sources.shapes.twins import TWIN_KINDS

from ..objectives.registry import HEADS, NEGATIVES, TERMS, not_accumulating, terms_needing
from ..trackers import tracker_problem
from .schema import PRECISIONS, Config, ConfigError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Range and consistency checks that types cannot express."""
    t, d = cfg.train, cfg.data
    _check(bool(cfg.output_dir), "output_dir: must not be empty")
    _check(t.max_steps >= 1, f"train.max_steps: must be at least 1, got {t.max_steps}")
    _check(t.batch_size >= 1, f"train.batch_size: must be at least 1, got {t.batch_size}")
    _check(t.accum_steps >= 1, f"train.accum_steps: must be at least 1, got {t.accum_steps}")
    _check(t.save_every >= 1, f"train.save_every: must be at least 1, got {t.save_every}")
    _check(t.keep_last >= 1, f"train.keep_last: must be at least 1, got {t.keep_last}")
    _check(t.log_every >= 1, f"train.log_every: must be at least 1, got {t.log_every}")
    _check(t.agree_every >= 1, f"train.agree_every: must be at least 1, got {t.agree_every}")
    _check(t.lr > 0, f"train.lr: must be positive, got {t.lr}")
    _check(t.warmup_steps >= 0, f"train.warmup_steps: must not be negative, got {t.warmup_steps}")
    _check(t.grad_clip >= 0, f"train.grad_clip: must not be negative, got {t.grad_clip}")
    _check(t.max_nonfinite_steps >= 1, f"train.max_nonfinite_steps: must be at least 1, got {t.max_nonfinite_steps}")
    _check(t.precision in PRECISIONS, f"train.precision: must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    _check(t.threads >= 0, f"train.threads: must not be negative, got {t.threads}")
    _check(0 < t.data_warn_share <= 1, f"train.data_warn_share: must be in (0, 1], got {t.data_warn_share}")
    _check(t.collective_timeout_s > 0, f"train.collective_timeout_s: must be positive, got {t.collective_timeout_s}")
    _check(d.mode in MODES, f"data.mode: must be one of {', '.join(MODES)}, got {d.mode!r}")
    _check(d.workers >= 0, f"data.workers: must not be negative, got {d.workers}")
    _check(d.decoder in DECODERS, f"data.decoder: must be one of {', '.join(DECODERS)}, got {d.decoder!r}")
    _check(
        not (d.decoder == "device" and d.neighbours),
        "data.decoder=device with data.neighbours: the neighbours' images join the batch on the CPU; use fast",
    )
    _check(d.read_retries >= 0, f"data.read_retries: must not be negative, got {d.read_retries}")
    _check(d.retry_backoff_s >= 0, f"data.retry_backoff_s: must not be negative, got {d.retry_backoff_s}")
    _check(
        d.worker_nice is None or 0 <= d.worker_nice <= 19,
        f"data.worker_nice: must be in 0..19, got {d.worker_nice}",
    )
    _check(bool(d.train or d.shapes_world), "data.train: no training data (set data.train or data.shapes_world)")
    _check(bool(cfg.objective.terms), "objective.terms: at least one term is needed")
    for name, weight in cfg.objective.terms.items():
        if name not in TERMS:
            close = difflib.get_close_matches(name, list(TERMS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"objective.terms.{name}: unknown term{hint}; known: {', '.join(TERMS)}")
        _check(weight >= 0, f"objective.terms.{name}: weight must not be negative, got {weight}")
    no_accumulation = not_accumulating(cfg.objective.terms)
    _check(
        t.accum_steps == 1 or not no_accumulation,
        f"train.accum_steps={t.accum_steps} with objective.terms.{(no_accumulation or [''])[0]}: its "
        "accumulated gradient would not be exact (ProtoCLIP's heads use BatchNorm, whose statistics differ "
        "between micro-batches and the whole batch); use a larger train.batch_size instead",
    )
    with_negatives = terms_needing(cfg.objective.terms, NEGATIVES)
    _check(
        not with_negatives or d.negatives >= 1,
        f"objective.terms.{(with_negatives or [''])[0]}: needs hard negatives; "
        "set data.negatives (K, e.g. 4) and give shards whose .json hold them",
    )
    _check(d.negatives >= 0, f"data.negatives: must not be negative, got {d.negatives}")
    _check(
        d.negative_sampling in NEGATIVE_SAMPLING,
        f"data.negative_sampling: must be one of {', '.join(NEGATIVE_SAMPLING)}, got {d.negative_sampling!r}",
    )
    episodic = terms_needing(cfg.objective.terms, HEADS)
    _check(
        not (d.neighbours and episodic),
        f"data.neighbours with objective.terms.{(episodic or [''])[0]}: ProtoCLIP's episodes label the stream's "
        "own samples, not their neighbours",
    )
    _check(
        d.neighbour_kinds is None
        or (d.neighbours and d.neighbour_kinds and all(isinstance(k, str) and k for k in d.neighbour_kinds)),
        f"data.neighbour_kinds: a non-empty list of kinds, with data.neighbours=true; got {d.neighbour_kinds!r}",
    )
    unknown = sorted(set(d.neighbour_kinds or ()) - set(TWIN_KINDS))
    _check(
        not unknown,
        f"data.neighbour_kinds: unknown kind(s) {unknown}; the shapes world's twins are {', '.join(TWIN_KINDS)}",
    )
    o = cfg.objective
    # 1.0: the teacher stays the starting model (distillation to a frozen copy of where the run began).
    _check(0.0 <= o.ema_decay <= 1.0, f"objective.ema_decay: must be in [0, 1], got {o.ema_decay}")
    _check(o.tgc_temperature > 0, f"objective.tgc_temperature: must be positive, got {o.tgc_temperature}")
    _check(o.dcl_sigma is None or o.dcl_sigma > 0, f"objective.dcl_sigma: must be positive, got {o.dcl_sigma}")
    _check(o.proto.clusters >= 2, f"objective.proto.clusters: must be at least 2, got {o.proto.clusters}")
    _check(o.proto.episode_steps >= 1, "objective.proto.episode_steps: must be at least 1")
    _check(o.proto.restarts >= 1, f"objective.proto.restarts: must be at least 1, got {o.proto.restarts}")
    _check(cfg.eval.every >= 0, f"eval.every: must not be negative, got {cfg.eval.every}")
    _check(cfg.eval.batch_size >= 1, f"eval.batch_size: must be at least 1, got {cfg.eval.batch_size}")
    for name in cfg.log.trackers:  # a tracker whose package is missing: accelerate would leave it out silently
        problem = tracker_problem(name)
        _check(problem is None, f"log.trackers: {problem}")
    resume = t.resume
    _check(
        resume in ("", "latest") or Path(resume).is_dir(),
        f"train.resume: {resume!r} is neither 'latest' nor an existing checkpoint directory",
    )
    _check(
        resume in ("", "latest") or (Path(resume) / "trainer_state.json").is_file(),
        f"train.resume: {resume} is not a vlp checkpoint (no trainer_state.json)",
    )
