"""Weights from TorchScript archives, such as OpenAI's original CLIP checkpoints (ViT-B-32.pt).

vlp loads weight files with ``torch.load(..., weights_only=True)``, which refuses TorchScript
archives. Their tensors are read here through TorchScript's own loader (``torch.jit.load``, which
builds the archive's module from TorchScript code and tensors, never unpickling arbitrary Python
objects), and ``vlp-export convert`` writes them once as safetensors, after which nothing but
tensors is ever read.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .common.atomic import atomic_file

# Entries of OpenAI's archives (and of scripted open_clip models) that are not weights of an open_clip
# model: hyper-parameters stored as tensors, and the causal mask that open_clip rebuilds itself.
NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A zip whose records hold TorchScript code (``<name>/code/...``) or constants."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The archive's weights, fp32, on the CPU, without the entries in :data:`NOT_WEIGHTS`."""
    with warnings.catch_warnings():  # torch marks TorchScript deprecated; reading an archive is why we use it
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return {
        k: (v.float() if v.is_floating_point() else v).detach().contiguous().clone()
        for k, v in module.state_dict().items()
        if k not in NOT_WEIGHTS
    }


def convert(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the archive's weights as a safetensors file (usable as model.pretrained)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the converted weights file must end in .safetensors")
    state = torchscript_state_dict(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        save_file(state, tmp)
    return out
