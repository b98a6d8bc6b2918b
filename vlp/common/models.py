"""open_clip model files as every package needs them: an architecture file made known to open_clip, and
an image tower with its eval transform (the data side embeds images with it, e.g. to find neighbours).

One function, :func:`register_architecture`, decides what a model architecture file is, for the data
side, the evaluators and the trainer alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch


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


def image_encoder(
    model: str, pretrained: str = "", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable]:
    """An open_clip model in eval mode (``model`` a name or an architecture ``.json``) and its eval
    transform. Without ``pretrained`` the weights are random but the same in every run (seed 0).
    Raises ValueError naming the model when it cannot be built."""
    try:
        name = register_architecture(model) if model.endswith(".json") else model
        with torch.random.fork_rng(devices=[]):  # random weights reproducible, the caller's RNG untouched
            torch.manual_seed(0)
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained or None, device=device, weights_only=True
            )
    except (RuntimeError, OSError, ValueError) as exn:  # OSError: a missing file or a failed download
        raise ValueError(f"cannot load model {model!r} (pretrained={pretrained!r}): {exn}") from None
    return net.eval(), preprocess
