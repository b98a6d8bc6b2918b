"""Export a checkpoint as an open_clip local dir: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

``open_clip.create_model_and_transforms("local-dir:DIR")`` loads the result, and so does
CLIP_benchmark (``--model local-dir:DIR --pretrained ''``). Weights are fp32: from DeepSpeed ZeRO
checkpoints the fp32 master copy is reassembled from the partitions (``zero_to_fp32``), so a bf16 run
exports its full-precision weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_pipelines.shards.atomic import staged, write_json_atomic

from .checkpoint import DamagedCheckpoint, verify_checkpoint
from .torchscript import convert, is_torchscript_archive

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
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


def clip_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The open_clip model's weights out of the trainer's module (``clip.*``; heads are dropped)."""
    if any(k.startswith("clip.") for k in state):
        return {k[len("clip.") :]: v for k, v in state.items() if k.startswith("clip.")}
    return dict(state)


def export_state(state: dict[str, torch.Tensor], open_clip_config: dict, out: str | os.PathLike) -> Path:
    """Write an open_clip local dir atomically (built beside ``out``, then renamed)."""
    out = Path(out)
    state = clip_weights(state)
    for key in ("logit_scale", "logit_bias"):  # open_clip's default is a 0-dim parameter
        if key in state and state[key].numel() == 1:
            state[key] = state[key].reshape(())
    with staged(out) as tmp:
        save_file(state, tmp / WEIGHTS_NAME)
        write_json_atomic(tmp / CONFIG_NAME, open_clip_config)
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a trainer checkpoint, verified against its manifest first (DamagedCheckpoint if not)."""
    ckpt = Path(checkpoint)
    verify_checkpoint(ckpt)
    config_path = ckpt / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{ckpt} is not a vlp checkpoint (no {CONFIG_NAME})")
    return export_state(checkpoint_state_dict(ckpt), json.loads(config_path.read_text()), out)


def _convert(archive: str, out: str) -> str:
    if not is_torchscript_archive(archive):
        raise ValueError(f"{archive} is not a TorchScript archive")
    return f"converted {archive} -> {convert(archive, out)} (use it as model.pretrained)"


def _export(checkpoint: str, out: str) -> str:
    done = export_checkpoint(checkpoint, out)
    return f"exported {checkpoint} -> {done} (load with open_clip.create_model_and_transforms('local-dir:{done}'))"


# command -> (what it does, its input and help, what --out is, the function)
COMMANDS = {
    "vlp-export": (
        "Export a vlp checkpoint (OUTPUT/checkpoints/step_N) as an open_clip local dir. "
        "`vlp-export convert ARCHIVE --out W.safetensors` converts a TorchScript archive's weights instead.",
        ("checkpoint", "checkpoint directory, e.g. runs/demo/checkpoints/step_600"),
        "output directory (replaced if it exists)",
        _export,
    ),
    "vlp-export convert": (
        "Write the weights of a TorchScript archive (e.g. OpenAI's ViT-B-32.pt) as safetensors, usable as "
        "model.pretrained with any matching open_clip architecture (e.g. ViT-B-32-quickgelu).",
        ("archive", "TorchScript archive (.pt)"),
        "weights file to write (.safetensors)",
        _convert,
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "vlp-export convert" if argv[:1] == ["convert"] else "vlp-export"
    description, (name, help_), out_help, run = COMMANDS[prog]
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(name, help=help_)
    p.add_argument("--out", required=True, help=out_help)
    args = p.parse_args(argv[1:] if prog.endswith("convert") else argv)
    try:
        print(run(getattr(args, name), args.out))
    except DamagedCheckpoint as exn:  # the bytes on disk are wrong, not the command
        print(f"{prog}: error: the checkpoint is damaged: {exn}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exn:
        print(f"{prog}: error: {exn}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
