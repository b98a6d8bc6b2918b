"""Load any open_clip model spec for evaluation: a name with a pretrained tag or file, local-dir:PATH,
or an architecture JSON file of ours."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def register_architecture(path: str | os.PathLike) -> str:
    """Make an architecture file (e.g. configs/models/*.json) known to open_clip under its file stem.

    Returns the model name to pass to open_clip. Raises ValueError, naming the file, when it does not
    exist or is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model architecture file {path} does not exist")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exn:
        raise ValueError(f"model architecture file {path} is not valid JSON ({exn})") from None
    if not isinstance(config, dict):
        raise ValueError(f"model architecture file {path} must hold a JSON object")
    open_clip.add_model_config(path)
    return path.stem


def load_model(spec: str, pretrained: str = "", device: str | torch.device = "cpu") -> LoadedModel:
    """``open_clip.create_model_and_transforms`` in eval mode, fp32, with its eval transform.

    ``spec`` ending in ``.json`` is an architecture file (randomly initialised, or ``pretrained``).
    """
    try:
        if spec.endswith(".json"):
            spec = register_architecture(spec)
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec, pretrained=pretrained or None, device=device, weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(spec)
    except (RuntimeError, FileNotFoundError, ValueError) as exn:
        raise ModelError(f"cannot load model {spec!r} (pretrained={pretrained!r}): {exn}") from None
    model.eval()
    return LoadedModel(model, preprocess, tokenizer, spec, pretrained)
