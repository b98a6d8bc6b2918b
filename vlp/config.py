"""The run configuration: a typed tree of dataclasses, read from YAML plus ``key.sub=value`` overrides.

Every key is checked before anything is written: an unknown key (with a suggestion), a value of the
wrong type or out of range raises :class:`ConfigError` naming the key. The full tree is printed at
start and saved as ``config.yaml`` next to the checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_pipelines.loader import MODES

from .objectives.registry import HEADS, NEGATIVES, TERMS, terms_needing

PRECISIONS = ("fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A configuration the run cannot start with; the message names the key."""


@dataclass
class ModelConfig:
    # An open_clip model name (ViT-B-32, RN50, ...), a JSON architecture file in open_clip's format
    # (configs/models/*.json), or local-dir:PATH (an export of ours or any open_clip local dir).
    name: str = "configs/models/vlp-tiny.json"
    # Weights: an open_clip pretrained tag or a local file ('' = random initialisation).
    pretrained: str = ""
    # An architecture given inline (open_clip model config: embed_dim, vision_cfg, text_cfg); when set,
    # `name` only names it.
    arch: dict | None = None
    lock_image: bool = False
    lock_text: bool = False
    grad_checkpointing: bool = False


@dataclass
class DataConfig:
    # Training shards: a directory, brace spec, pipe: command or URL; '::' joins sources.
    train: str = ""
    # When set: the shapes world lives here; it is generated when missing, and trained on (its train/
    # split) unless `train` is given.
    shapes_world: str = ""
    shapes_train_samples: int = 20_000
    mode: str = "split"  # split | resampled
    weights: list[float] | None = None  # per source, resampled mode
    workers: int = 1  # DataLoader workers per rank
    # Niceness added to the workers (0-19); unset: 19 when training on the CPU (the workers then
    # take the cycles the compute threads leave, +4-6% samples/s on 2 cores), 0 on accelerators.
    worker_nice: int | None = None
    shuffle_buffer: int = 1000
    augment: bool = True  # open_clip's training transform (random resized crop) instead of the eval one
    epoch_samples: int | None = None  # nominal epoch in resampled mode
    negatives: int = 0  # K hard negatives per caption, read from each sample's .json (terms that need them)
    negative_types: list[str] | None = None  # only these types (default: all)


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 64  # per rank, per micro-batch
    accum_steps: int = 1  # micro-batches per optimizer step, with exact (feature-cached) contrastive gradients
    lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.2  # on weights with >= 2 dimensions only
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seed: int = 0
    save_every: int = 500
    keep_last: int = 2
    resume: str = ""  # '' (fresh), 'latest' (newest checkpoint in output_dir, if any) or a checkpoint path
    log_every: int = 10
    max_nonfinite_steps: int = 5  # stop after this many skipped (non-finite) steps in a row
    local_loss: bool = False  # local rows x global columns (open_clip's --local-loss)
    threads: int = 0  # torch threads per process; 0 = cores / processes on this machine


@dataclass
class ProtoConfig:
    clusters: int = 64  # K-means clusters per modality (ProtoCLIP used 20,000 for 200k-sample episodes)
    episode_steps: int = 50  # an episode is this many steps; the first trains CLIP only
    iters: int = 20  # Lloyd iterations
    target_temperature: float = 0.01  # τ_t of the soft targets; <= 0 for hard labels
    hidden: int = 2048  # projection head: Linear(D, hidden) -> BN -> ReLU -> Linear(hidden, dim)
    dim: int = 128


@dataclass
class ObjectiveConfig:
    # Term name -> weight; the loss is the weighted sum. Terms: clip, dcl, negclip, igc, tgc, distill,
    # proto, proto_external (ProtoCLIP's external teacher; needs vlp[protoclip]). distill is a sum over
    # the batch (as in DeGLA), so its weight is small (0.005).
    terms: dict[str, float] = field(default_factory=lambda: {"clip": 1.0})
    ema_decay: float = 0.9996  # the EMA teacher of tgc and distill
    dcl_sigma: float | None = None  # set it for DCLW (weighted positives), e.g. 0.5
    tgc_temperature: float = 0.1
    proto: ProtoConfig = field(default_factory=ProtoConfig)


@dataclass
class EvalConfig:
    # Zero-shot sets evaluated during training: CLIP_benchmark wds roots, ImageFolders or caption
    # tables, each optionally with ":split" (e.g. data/shapes/zeroshot:heldout).
    zeroshot: list[str] = field(default_factory=list)
    every: int = 0  # steps between evaluations; 0 = only at the end
    batch_size: int = 64


@dataclass
class Config:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------- typed conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exn:
                errors.append(str(exn))
        raise ConfigError(errors[0] if errors else f"{key}: unsupported value {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        if not args:
            return dict(value)
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return _build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _merge(base: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = base
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.max_steps=100`` -> ("train.max_steps", 100); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exn:
        raise ConfigError(f"override {key}: cannot read value {raw!r} ({exn})") from None
    return key.strip(), value


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (optional), apply overrides, build and validate the typed tree."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exn:
            raise ConfigError(f"{path}: not valid YAML ({exn})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides:
        key, value = parse_override(text)
        _merge(data, key, value)
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


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
    _check(t.lr > 0, f"train.lr: must be positive, got {t.lr}")
    _check(t.warmup_steps >= 0, f"train.warmup_steps: must not be negative, got {t.warmup_steps}")
    _check(t.grad_clip >= 0, f"train.grad_clip: must not be negative, got {t.grad_clip}")
    _check(t.max_nonfinite_steps >= 1, f"train.max_nonfinite_steps: must be at least 1, got {t.max_nonfinite_steps}")
    _check(t.precision in PRECISIONS, f"train.precision: must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    _check(t.threads >= 0, f"train.threads: must not be negative, got {t.threads}")
    _check(d.mode in MODES, f"data.mode: must be one of {', '.join(MODES)}, got {d.mode!r}")
    _check(d.workers >= 0, f"data.workers: must not be negative, got {d.workers}")
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
    no_accumulation = terms_needing(cfg.objective.terms, HEADS)
    _check(
        t.accum_steps == 1 or not no_accumulation,
        f"train.accum_steps={t.accum_steps} with objective.terms.{(no_accumulation or [''])[0]}: ProtoCLIP's "
        "heads use BatchNorm, whose statistics differ between micro-batches and the whole batch, so the "
        "accumulated gradient would not be exact; use a larger train.batch_size instead",
    )
    with_negatives = terms_needing(cfg.objective.terms, NEGATIVES)
    _check(
        not with_negatives or d.negatives >= 1,
        f"objective.terms.{(with_negatives or [''])[0]}: needs hard negatives; "
        "set data.negatives (K, e.g. 4) and give shards whose .json hold them",
    )
    _check(d.negatives >= 0, f"data.negatives: must not be negative, got {d.negatives}")
    o = cfg.objective
    _check(0.0 <= o.ema_decay < 1.0, f"objective.ema_decay: must be in [0, 1), got {o.ema_decay}")
    _check(o.tgc_temperature > 0, f"objective.tgc_temperature: must be positive, got {o.tgc_temperature}")
    _check(o.dcl_sigma is None or o.dcl_sigma > 0, f"objective.dcl_sigma: must be positive, got {o.dcl_sigma}")
    _check(o.proto.clusters >= 2, f"objective.proto.clusters: must be at least 2, got {o.proto.clusters}")
    _check(o.proto.episode_steps >= 1, "objective.proto.episode_steps: must be at least 1")
    _check(cfg.eval.every >= 0, f"eval.every: must not be negative, got {cfg.eval.every}")
    _check(cfg.eval.batch_size >= 1, f"eval.batch_size: must be at least 1, got {cfg.eval.batch_size}")
    resume = t.resume
    _check(
        resume in ("", "latest") or Path(resume).is_dir(),
        f"train.resume: {resume!r} is neither 'latest' nor an existing checkpoint directory",
    )


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
