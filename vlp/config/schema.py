"""The configuration tree: one dataclass per section, defaults and a comment for each key."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # The global order permutes the epoch's samples within windows of this many (data_pipelines.loader.order).
    shuffle_buffer: int = 1000
    # Where remote (pipe:, http, fsspec) and compressed shards are copied, once per machine, to be read by
    # offset, and where indexes of read-only local shards go; unset: $VLP_SHARD_CACHE, else a temp folder.
    cache_dir: str | None = None
    augment: bool = True  # open_clip's training transform (random resized crop) instead of the eval one
    epoch_samples: int | None = None  # nominal epoch in resampled mode
    negatives: int = 0  # K hard negatives per caption, read from each sample's .json (terms that need them)
    negative_types: list[str] | None = None  # only these types (default: all)
    # Which K of a sample's negatives: "random" (drawn again each epoch) or "fixed" (its first K for the
    # whole run, as DeGLA's data gives them).
    negative_sampling: str = "random"
    # NegCLIP's hard-negative images: each sample's neighbour (the shapes world's exact twin, or a
    # nearest neighbour from `vlp-data neighbours`) joins the batch as an extra row with its own caption
    # and negatives, so both contrast directions see it.
    neighbours: bool = False
    # Only samples whose neighbour is of these kinds (the JSON neighbour's "twin": the shapes world's
    # mirror_relation, swap_colours, replace_colour); the others' positions hold stand-ins drawn from them.
    neighbour_kinds: list[str] | None = None
    # A shard whose opening or reading fails (a `pipe:` command exiting non-zero, an fsspec or network
    # error) is tried again this many times, waiting retry_backoff_s, then twice as long each time,
    # before it counts as skipped (`unreadable_shard` / `truncated_shard`); retries are counted too.
    # How JPEG members become pixels: "fast" (libjpeg-turbo decode at reduced size, one antialiased
    # bilinear crop-resize on uint8: ~3x open_clip's images/s per core; the same random crops), "pil"
    # (open_clip's transform exactly) or "device" (JPEG bytes decoded, cropped and normalised on the
    # training device: nvJPEG on GPUs). Other formats (the shapes world's PNGs) always take "pil".
    decoder: str = "fast"
    read_retries: int = 3
    retry_backoff_s: float = 1.0


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
    # Steps between agreements of the ranks (the stop signal, skipped steps, peak memory) on steps that
    # neither log, evaluate nor save: each is one collective and one host sync. A SIGTERM is acted on
    # within this many steps, so agree_every x step time + a save must fit in the launcher's grace
    # period (launch/slurm.sh: TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
    agree_every: int = 10
    max_nonfinite_steps: int = 5  # stop after this many skipped (non-finite) steps in a row
    local_loss: bool = False  # local rows x global columns (open_clip's --local-loss)
    threads: int = 0  # torch threads per process; 0 = cores / processes on this machine
    # Seconds a collective (all-reduce, barrier, ...) may wait for the other ranks before the run stops
    # with an error naming the rank that stopped answering; passed to the process group (gloo/NCCL,
    # DDP and DeepSpeed alike). Rank-0-only work between collectives (export, world generation) must
    # fit in it.
    collective_timeout_s: float = 300.0
    # Warn (one line, at most every 500 steps) when waiting for the loader takes more than this share of
    # the step time over the last 50 steps: the run is data-bound.
    data_warn_share: float = 0.1


@dataclass
class ProtoConfig:
    clusters: int = 64  # K-means clusters per modality (ProtoCLIP used 20,000 for 200k-sample episodes)
    episode_steps: int = 50  # an episode is this many steps; the first trains CLIP only
    iters: int = 20  # Lloyd iterations
    restarts: int = 3  # K-means runs from different seeds; the lowest inertia wins (ProtoCLIP: faiss nredo=3)
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
    # tables, each optionally with ":split" (e.g. data/shapes/zeroshot:heldout), or named datasets
    # (imagenet:PATH with ImageNet's synset folders: open_clip's 1,000 names and 80 templates).
    zeroshot: list[str] = field(default_factory=list)
    every: int = 0  # steps between evaluations; 0 = only at the end
    batch_size: int = 64


@dataclass
class LogConfig:
    # Experiment trackers the metrics go to, by accelerate's names: tensorboard (OUTPUT/tensorboard), wandb,
    # mlflow, aim, comet_ml, clearml, dvclive, swanlab, trackio; each but tensorboard needs its package
    # (pip install 'vlp[wandb]', ...). [] = none: metrics.jsonl and eval.jsonl are written either way.
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    # The trackers' project (wandb project, mlflow experiment, ...); '' = output_dir's folder name. The run
    # itself is always named after output_dir's folder.
    project: str = ""


@dataclass
class Config:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
