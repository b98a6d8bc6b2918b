"""The run's data: the shards it trains on, the stream options its configuration and objective ask for
(one frozen :class:`~data_pipelines.loader.StreamOptions`), and the loader of this rank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_pipelines.loader import StreamingLoader, StreamOptions

from ..config import Config


def train_spec(cfg: Config) -> str:
    """data.train, or the training shards of the shapes world the run generates."""
    return cfg.data.train or str(Path(cfg.data.shapes_world) / "train")


def stream_options(cfg: Config, negatives: bool, captions: bool, device_type: str) -> StreamOptions:
    """What the data section asks for, and what the objective needs from it: ``negatives`` (a term
    contrasts hard-negative captions), ``captions`` (an external teacher embeds the raw captions)."""
    d = cfg.data
    # On a CPU the workers yield to the compute threads (a step's parallel regions stall on a preempted
    # thread); the scheduler still gives them every idle cycle.
    nice = (19 if device_type == "cpu" else 0) if d.worker_nice is None else d.worker_nice
    return StreamOptions(
        mode=d.mode,
        weights=d.weights,
        seed=cfg.train.seed,
        shuffle_buffer=d.shuffle_buffer,
        epoch_samples=d.epoch_samples,
        drop_last=True,
        num_negatives=d.negatives if negatives else 0,
        negative_types=d.negative_types,
        negative_sampling=d.negative_sampling,
        neighbours=d.neighbours,
        neighbour_kinds=d.neighbour_kinds,
        captions=captions,
        decoder=d.decoder,
        read_retries=d.read_retries,
        retry_backoff_s=d.retry_backoff_s,
        cache_dir=d.cache_dir,
        num_workers=d.workers,
        worker_nice=nice,
        pin_memory=device_type == "cuda",  # pinned batches copy to the GPU without blocking the host
    )


def build_loader(
    cfg: Config, preprocess: Callable, tokenizer: Callable, rank: int, world: int, options: StreamOptions
) -> StreamingLoader:
    """This rank's loader over the run's shards."""
    return StreamingLoader(
        train_spec(cfg),
        preprocess=preprocess,
        tokenizer=tokenizer,
        batch_size=cfg.train.batch_size,
        rank=rank,
        world_size=world,
        options=options,
    )
