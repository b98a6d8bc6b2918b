"""Reading checkpoint files as data only: every torch.load weights-only (DeepSpeed's included), the
classes DeepSpeed pickles allowed by name, and one message for a file that holds anything else."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

DS_TAG = "pytorch_model"  # the tag accelerate gives DeepSpeed checkpoints of its first model

# torch's switch that makes every torch.load weights-only, even one that passes weights_only=False
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holding something other than tensors and plain data: it is not loaded."""


def deepspeed_safe_globals() -> list[type]:
    """The classes DeepSpeed (0.19) pickles into its checkpoint files besides tensors and builtins.

    Each is a record of numbers: a ZeRO stage (an int enum), a flat fragment's (start, numel)
    (a dataclass), a loss scaler's scale and counters (plain attributes; no ``__setstate__``).
    Allowed by name, torch's weights-only unpickler rebuilds them without running any code of the
    file. Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO 0-3 checkpoints,
    fp32 and bf16 (tests/test_safe_loading.py checks a real one).
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


@contextlib.contextmanager
def weights_only_loads(safe_globals: Iterable = ()) -> Iterator[None]:
    """Every ``torch.load`` inside, a library's included, runs with ``weights_only=True``.

    DeepSpeed loads its files with an explicit ``weights_only=False`` (its checkpoint engine and
    ``zero_to_fp32``); torch's ``$TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides that, so such a file is
    read as data only, with ``safe_globals`` (e.g. :func:`deepspeed_safe_globals`) allowed besides
    torch's own. A file holding anything else raises ``pickle.UnpicklingError`` before any of its
    objects is built. Not thread-safe (it sets the variable for the whole process while it runs).
    """
    saved = {name: os.environ.pop(name, None) for name in (FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def refusal_error(where: str | os.PathLike, exn: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """The error for a file that weights-only loading refused, naming ``where`` and the offending global."""
    lines = [ln.strip() for ln in str(exn).splitlines() if ln.strip()]
    # torch's message starts with advice about weights_only=False; the reason is on its "WeightsUnpickler error" line
    found = [ln.split("error:", 1)[-1].strip() for ln in lines if "WeightsUnpickler error" in ln]
    reason = (found or lines or [""])[0].split(". Please use")[0]  # not torch's advice to allow it
    return UnsafeCheckpointError(
        f"{where}: refused to load: it holds Python objects other than tensors and plain data "
        f"({reason[:200]}); vlp reads checkpoint files with weights_only=True, so such a file cannot run code"
    )


def checkpoint_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """fp32 model weights from a checkpoint written by vlp's trainer (any accelerate backend).

    Only data is read: safetensors, or torch files with ``weights_only=True`` (DeepSpeed's included,
    see :func:`weights_only_loads`). A file holding other objects raises :class:`UnsafeCheckpointError`.
    """
    ckpt = Path(checkpoint)
    ds_dir = ckpt / DS_TAG
    source = ckpt  # what a refusal names: the file read, or DeepSpeed's folder (zero_to_fp32 reads several)
    try:
        if ds_dir.is_dir():
            # deepspeed takes seconds to import: only for checkpoints that need it
            with weights_only_loads(deepspeed_safe_globals()):
                if any(ds_dir.glob("*zero_pp_rank_*optim_states.pt")):  # ZeRO 1-3 (bf16_ prefix in bf16 runs)
                    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

                    source = f"a DeepSpeed file in {ds_dir}"
                    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)
                else:  # ZeRO stage 0: the engine saved the module itself
                    source = ds_dir / "mp_rank_00_model_states.pt"
                    state = torch.load(source, map_location="cpu", weights_only=True)["module"]
        elif (ckpt / "model.safetensors").is_file():
            state = load_file(ckpt / "model.safetensors")
        elif (ckpt / "pytorch_model.bin").is_file():
            source = ckpt / "pytorch_model.bin"
            state = torch.load(source, map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(
                f"{ckpt} holds no model weights (no {DS_TAG}/, model.safetensors or pytorch_model.bin)"
            )
    except pickle.UnpicklingError as exn:
        raise refusal_error(source, exn) from None
    return {k: v.detach().float().contiguous().clone() for k, v in state.items()}
