"""Export a checkpoint as an open_clip local dir: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

``open_clip.create_model_and_transforms("local-dir:DIR")`` loads the result, and so does
CLIP_benchmark (``--model local-dir:DIR --pretrained ''``). Weights are fp32: from DeepSpeed ZeRO
checkpoints the fp32 master copy is reassembled from the partitions (``zero_to_fp32``), so a bf16 run
exports its full-precision weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import DamagedCheckpoint, checkpoint_state_dict, verify_checkpoint
from .common.atomic import staged, write_json_atomic
from .common.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_output_arg, error, parser
from .torchscript import convert, is_torchscript_archive

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


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


# command -> (what it does, its input and help, what --out is, the function, examples)
COMMANDS = {
    "vlp-export": (
        "Export a vlp checkpoint (OUTPUT/checkpoints/step_N) as an open_clip local dir. "
        "`vlp-export convert ARCHIVE --out W.safetensors` converts a TorchScript archive's weights instead.",
        ("checkpoint", "checkpoint directory, e.g. runs/demo/checkpoints/step_600"),
        "output directory (replaced if it exists)",
        _export,
        [
            "vlp-export runs/demo/checkpoints/step_450 --out runs/demo/export",
            "vlp-export convert ViT-B-32.pt --out vit_b32_openai.safetensors",
        ],
    ),
    "vlp-export convert": (
        "Write the weights of a TorchScript archive (e.g. OpenAI's ViT-B-32.pt) as safetensors, usable as "
        "model.pretrained with any matching open_clip architecture (e.g. ViT-B-32-quickgelu).",
        ("archive", "TorchScript archive (.pt)"),
        "weights file to write (.safetensors)",
        _convert,
        ["vlp-export convert ViT-B-32.pt --out vit_b32_openai.safetensors"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "vlp-export convert" if argv[:1] == ["convert"] else "vlp-export"
    description, (name, help_), out_help, work, examples = COMMANDS[prog]
    p = parser(prog, description, examples)
    p.add_argument(name, help=help_)
    add_output_arg(p, out_help, required=True)
    args = p.parse_args(argv[1:] if prog.endswith("convert") else argv)
    try:
        print(work(getattr(args, name), args.out))
    except DamagedCheckpoint as exn:  # the bytes on disk are wrong, not the command
        return error(prog, f"the checkpoint is damaged: {exn}", EXIT_FAILED)
    except (FileNotFoundError, ValueError, KeyError) as exn:  # a wrong path, a file that is not a checkpoint
        return error(prog, str(exn), EXIT_USAGE)
    except RuntimeError as exn:  # torch or DeepSpeed failed while reading or writing: not the command line
        return error(prog, str(exn), EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
