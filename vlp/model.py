"""Build the dual encoder: any open_clip model, from a name, a JSON architecture, inline, or a local dir."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from .common.models import register_architecture
from .config import ConfigError, ModelConfig
from .protoclip.heads import ProtoHeads
from .torchscript import convert, is_torchscript_archive

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's bound on the logit scale


class DualEncoder(torch.nn.Module):
    """The module the trainer optimises: an open_clip model (``clip``) plus, for ProtoCLIP, its
    projection heads and their scale (``heads``). One forward gives everything the objective needs:
    normalised image and caption features, exp(logit_scale), and (with heads) the normalised
    projections of the images and of the first ``len(image)`` captions (the positives)."""

    def __init__(self, clip: torch.nn.Module, heads: ProtoHeads | None = None):
        super().__init__()
        self.clip = clip
        self.heads = heads

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        image_raw = self.clip.encode_image(image)
        text_raw = self.clip.encode_text(text)
        out = {
            "image_features": F.normalize(image_raw, dim=-1),
            "text_features": F.normalize(text_raw, dim=-1),
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if self.heads is not None:
            out.update(self.heads(image_raw, text_raw[: len(image)]))
        return out

    def logit_scales(self) -> list[torch.nn.Parameter]:
        """The learnable scales that are clamped to 100 after every step."""
        return [self.clip.logit_scale] + ([self.heads.logit_scale] if self.heads is not None else [])


@dataclass
class BuiltModel:
    model: torch.nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    open_clip_config: dict  # {"model_cfg", "preprocess_cfg"}: what an export needs to rebuild the model


def _register(cfg: ModelConfig) -> str:
    """The open_clip name to build; registers JSON or inline architectures with open_clip."""
    if cfg.arch is not None:
        name = Path(cfg.name).stem if cfg.name.endswith(".json") else cfg.name
        path = Path(tempfile.mkdtemp(prefix="vlp-arch-")) / f"{name}.json"
        path.write_text(json.dumps(cfg.arch))
        return register_architecture(path)
    if cfg.name.endswith(".json"):
        try:
            return register_architecture(cfg.name)
        except ValueError as exn:
            raise ConfigError(f"model.name: {exn}") from None
    if cfg.name.startswith("local-dir:"):
        return cfg.name
    if open_clip.get_model_config(cfg.name) is None:
        raise ConfigError(f"model.name: {cfg.name!r} is not an open_clip model, a .json architecture or local-dir:PATH")
    return cfg.name


def check_spec(cfg: ModelConfig) -> None:
    """Fail before anything is written when the model cannot be found (a clear message, exit 2)."""
    if cfg.arch is None and cfg.name.startswith("local-dir:"):
        folder = Path(cfg.name[len("local-dir:") :])
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError(f"model.name: {folder} is not an open_clip local dir (no open_clip_config.json)")
    else:
        _register(cfg)
    if cfg.pretrained and ("/" in cfg.pretrained or Path(cfg.pretrained).suffix in (".pt", ".bin", ".safetensors")):
        if not Path(cfg.pretrained).is_file():
            raise ConfigError(f"model.pretrained: {cfg.pretrained} does not exist")


def build_model(cfg: ModelConfig, augment: bool = True) -> BuiltModel:
    """Create the model with a [1]-shaped logit scale (DeepSpeed 0.19.8 cannot broadcast 0-dim
    parameters), its open_clip transforms and tokenizer, and apply tower locking and checkpointing."""
    name = _register(cfg)
    pretrained = cfg.pretrained or None
    with tempfile.TemporaryDirectory(prefix="vlp-weights-") as scratch:
        if pretrained and is_torchscript_archive(pretrained):
            # OpenAI's original checkpoints: weights_only=True refuses them, so their tensors are read
            # through TorchScript's loader into a safetensors file that open_clip's loader takes.
            log.info(
                "model.pretrained %s is a TorchScript archive: reading its tensors (vlp-export convert "
                "makes a safetensors copy once)",
                pretrained,
            )
            pretrained = str(convert(pretrained, Path(scratch) / "weights.safetensors"))
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, output_dict=True, nonscalar_logit_scale=True, weights_only=True
        )
    if cfg.lock_image:
        model.lock_image_tower()
    if cfg.lock_text:
        model.lock_text_tower()
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model_cfg = (
        open_clip.get_model_config(name)
        if not name.startswith("local-dir:")
        else json.loads((Path(name[len("local-dir:") :]) / "open_clip_config.json").read_text())["model_cfg"]
    )
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    return BuiltModel(
        model=model,
        preprocess_train=preprocess_train if augment else preprocess_val,
        preprocess_val=preprocess_val,
        tokenizer=open_clip.get_tokenizer(name),
        open_clip_config={"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weights with >= 2 dimensions; none on biases, norms and the scales, nor
    on ProtoCLIP's projection heads (as its authors exclude them)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and not name.startswith("heads.") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
