"""Build the dual encoder: any open_clip model, from a name, a JSON architecture, inline, or a local dir."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from .config import ConfigError, ModelConfig

MAX_LOGIT_SCALE = math.log(100.0)


class ProjectionHead(torch.nn.Sequential):
    """ProtoCLIP's head: Linear(D→hidden) → BatchNorm1d → ReLU → Linear(hidden→out), on the
    unnormalised tower output."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__(
            torch.nn.Linear(dim, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out)
        )


class DualEncoder(torch.nn.Module):
    """The module the trainer optimises: an open_clip model (``clip``) plus, for ProtoCLIP, the
    projection heads and their own scale. One forward gives everything the objective needs:
    normalised image and caption features, exp(logit_scale), and (with heads) the normalised
    projections of the images and of the first ``len(image)`` captions (the positives)."""

    def __init__(self, clip: torch.nn.Module, proto_hidden: int = 0, proto_dim: int = 0):
        super().__init__()
        self.clip = clip
        self.image_head = self.text_head = self.proto_logit_scale = None
        if proto_dim:
            dim = clip.visual.output_dim  # the joint embedding width
            self.image_head = ProjectionHead(dim, proto_hidden, proto_dim)
            self.text_head = ProjectionHead(dim, proto_hidden, proto_dim)
            self.proto_logit_scale = torch.nn.Parameter(torch.full([1], math.log(1 / 0.07)))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        image_raw = self.clip.encode_image(image)
        text_raw = self.clip.encode_text(text)
        out = {
            "image_features": torch.nn.functional.normalize(image_raw, dim=-1),
            "text_features": torch.nn.functional.normalize(text_raw, dim=-1),
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if self.image_head is not None:
            out["image_proj"] = torch.nn.functional.normalize(self.image_head(image_raw), dim=-1)
            out["text_proj"] = torch.nn.functional.normalize(self.text_head(text_raw[: len(image)]), dim=-1)
            out["proto_scale"] = self.proto_logit_scale.exp()
        return out

    def logit_scales(self) -> list[torch.nn.Parameter]:
        """The learnable scales that are clamped to 100 after every step."""
        return [p for p in (self.clip.logit_scale, self.proto_logit_scale) if p is not None]


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
        folder = Path(tempfile.mkdtemp(prefix="vlp-arch-"))
        (folder / f"{name}.json").write_text(json.dumps(cfg.arch))
        open_clip.add_model_config(folder / f"{name}.json")
        return name
    if cfg.name.endswith(".json"):
        path = Path(cfg.name)
        if not path.is_file():
            raise ConfigError(f"model.name: architecture file {path} does not exist")
        try:
            json.loads(path.read_text())
        except ValueError as exn:
            raise ConfigError(f"model.name: {path} is not valid JSON ({exn})") from None
        open_clip.add_model_config(path)
        return path.stem
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
    """AdamW groups: decay on weights with >= 2 dimensions; none on biases, norms and the scale."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
