"""Load any open_clip model spec for evaluation: a name with a pretrained tag or file, or local-dir:PATH."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch


class ModelError(ValueError):
    """The model spec cannot be loaded; the message says why."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    spec: str
    pretrained: str


def load_model(spec: str, pretrained: str = "", device: str | torch.device = "cpu") -> LoadedModel:
    """``open_clip.create_model_and_transforms`` in eval mode, fp32, with its eval transform."""
    if spec.endswith(".json"):  # an architecture file of ours (configs/models/*.json), random or `pretrained`
        open_clip.add_model_config(spec)
        from pathlib import Path

        spec = Path(spec).stem
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec, pretrained=pretrained or None, device=device, weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(spec)
    except (RuntimeError, FileNotFoundError, ValueError) as exn:
        raise ModelError(f"cannot load model {spec!r} (pretrained={pretrained!r}): {exn}") from None
    model.eval()
    return LoadedModel(model, preprocess, tokenizer, spec, pretrained)
