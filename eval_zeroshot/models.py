"""Load any open_clip model spec for evaluation: a name with a pretrained tag or file, local-dir:PATH,
or an architecture JSON file of ours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch

# One definition of an architecture file for every package (vlp.common).
from vlp.common.models import register_architecture

__all__ = ["LoadedModel", "ModelError", "load_model", "register_architecture"]


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
