"""Zero-shot evaluation during training (eval.zeroshot), the images split across ranks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eval_zeroshot.dataset_specs import read_dataset, split_spec
from eval_zeroshot.datasets import DatasetError, EvalSet
from eval_zeroshot.named import parse_named
from eval_zeroshot.zeroshot import count_fields, evaluate_counts

from ..config import EvalConfig
from .engine import Engine
from .errors import TrainingError


def read_eval_sets(cfg: EvalConfig) -> list[EvalSet]:
    """The eval.zeroshot sets, each named ``folder[:split]`` (a named dataset by its name, e.g. imagenet1k);
    a bad one stops the run before it starts."""
    sets = []
    for spec in cfg.zeroshot:
        path, split = split_spec(spec)
        try:
            dataset = read_dataset(path, split)
        except DatasetError as exn:
            raise TrainingError(f"eval.zeroshot: {exn}") from None
        base = dataset.name if parse_named(path)[0] is not None else Path(path).name
        dataset.name = f"{base}:{split}" if dataset.split else base
        sets.append(dataset)
    return sets


class ZeroShotEvaluator:
    def __init__(self, cfg: EvalConfig, sets: list[EvalSet], engine: Engine, preprocess: Callable, tokenizer):
        self.cfg, self.sets, self.engine, self.preprocess, self.tokenizer = cfg, sets, engine, preprocess, tokenizer
        self.last: list[dict] = []

    def due(self, step: int, max_steps: int) -> bool:
        every = self.cfg.every
        return bool(self.sets) and ((every and step % every == 0) or step == max_steps)

    def __call__(self) -> list[dict]:
        """Metrics of every set (a collective: every rank calls it)."""
        clip = self.engine.unwrapped.clip
        was_training = clip.training
        clip.eval()
        rank, world = self.engine.eval_partition()
        results = []
        for dataset in self.sets:
            metrics, correct = evaluate_counts(
                clip,
                self.preprocess,
                self.tokenizer,
                dataset,
                self.engine.device,
                self.cfg.batch_size,
                rank=rank,
                world_size=world,
                dtype=self.engine.input_dtype,
            )
            counts = dataset.counts()
            results.append(
                {
                    "dataset": dataset.name,
                    "split": dataset.split,
                    "task": dataset.task,
                    "counts": counts,
                    "metrics": metrics,
                    **count_fields(correct),
                }
            )
        clip.train(was_training)
        self.last = results
        return results
