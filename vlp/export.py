"""Export a checkpoint as an open_clip local dir: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

``open_clip.create_model_and_transforms("local-dir:DIR")`` loads the result, and so does
CLIP_benchmark (``--model local-dir:DIR --pretrained ''``). Weights are fp32: from DeepSpeed ZeRO
checkpoints the fp32 master copy is reassembled from the partitions (``zero_to_fp32``), so a bf16 run
exports its full-precision weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_pipelines.shards.atomic import publish_dir, staging_dir, write_json_atomic

from .torchscript import convert, is_torchscript_archive

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
DS_TAG = "pytorch_model"  # the tag accelerate gives DeepSpeed checkpoints of its first model


def checkpoint_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """fp32 model weights from a checkpoint written by vlp's trainer (any accelerate backend)."""
    ckpt = Path(checkpoint)
    ds_dir = ckpt / DS_TAG
    if ds_dir.is_dir():
        if any(ds_dir.glob("*zero_pp_rank_*optim_states.pt")):  # ZeRO 1-3 (bf16_ prefix in bf16 runs)
            # deepspeed takes seconds to import: only for checkpoints that need it
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)
        else:  # ZeRO stage 0: the engine saved the module itself (our own resume state, not foreign input)
            blob = torch.load(ds_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
            state = blob["module"]
    elif (ckpt / "model.safetensors").is_file():
        state = load_file(ckpt / "model.safetensors")
    elif (ckpt / "pytorch_model.bin").is_file():
        state = torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{ckpt} holds no model weights (no {DS_TAG}/, model.safetensors or pytorch_model.bin)")
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
    tmp = staging_dir(out)
    save_file(state, tmp / WEIGHTS_NAME)
    write_json_atomic(tmp / CONFIG_NAME, open_clip_config)
    publish_dir(tmp, out)
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    ckpt = Path(checkpoint)
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
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exn:
        print(f"{prog}: error: {exn}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
