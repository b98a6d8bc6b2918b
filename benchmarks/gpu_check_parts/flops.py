"""The two numbers MFU is made of: the device's bf16 dense peak (a table of device names, or
``--peak-tflops``) and the FLOPs of one trained sample, counted by open_clip's own profiler functions.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from .base import CheckError

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched in order against torch's device name:
# the more specific names first (an "H100 PCIe" is not an SXM H100).
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.2),
    ("A6000", 154.8),
]
# open_clip's docs/model_profile.csv (forward GFLOPs per sample), to cross-check the count made here.
OPEN_CLIP_TABLE_GFLOPS = {"ViT-B-32": {"gflops": 14.78, "image_gflops": 8.82, "text_gflops": 5.96}}


def device_info(args: argparse.Namespace) -> dict:
    if args.dry_run:
        name = "cpu"
    else:
        import torch

        if not torch.cuda.is_available():
            raise CheckError("no CUDA device here: run with --dry-run on a CPU machine")
        name = torch.cuda.get_device_name(0)
    peak, source = peak_tflops(name, args.peak_tflops)
    return {"name": name, "kind": "cpu" if args.dry_run else "gpu", "peak_tflops": peak, "peak_source": source}


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern.lower() in device_name.lower():
            return tflops, f"table: {pattern} bf16 dense"
    return None, f"no peak known for {device_name!r}: MFU not computed (pass --peak-tflops)"


def count_flops(model_name: str) -> dict:
    """Forward FLOPs of one sample with open_clip's profiler functions (on the CPU)."""
    import open_clip
    import open_clip_train.profiler as profiler
    from torch.utils.flop_counter import FlopCounterMode

    # Its profiler counts with FlopCounterMode(), whose default display=True prints a table that needs
    # the optional `tabulate` package: count silently, the same numbers.
    profiler.FlopCounterMode = functools.partial(FlopCounterMode, display=False)
    name = model_name
    if model_name.endswith(".json"):
        open_clip.add_model_config(model_name)
        name = Path(model_name).stem
    model = open_clip.create_model(name, force_custom_text=True, pretrained_hf=False).eval()  # as its profiler
    size = model.visual.image_size
    size = tuple(size[-2:]) if isinstance(size, (tuple, list)) else (size, size)
    image_input = (3, *size)
    text_input = (model.context_length,)
    total = profiler.profile_torch(model, text_input_size=text_input, image_input_size=image_input)
    image = profiler.profile_torch_image(model.visual, image_input_size=image_input)
    text = profiler.profile_torch_text(model.text, text_input_size=text_input)
    result = {
        "model": name,
        "image_size": list(size),
        "context_length": model.context_length,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "forward_gflops": round(total / 1e9, 4),
        "image_forward_gflops": round(image / 1e9, 4),
        "text_forward_gflops": round(text / 1e9, 4),
        "train_gflops_per_sample": round(3 * total / 1e9, 4),
        "source": "open_clip_train.profiler.profile_torch / profile_torch_image / profile_torch_text "
        "(torch.utils.flop_counter.FlopCounterMode, batch 1, torch.ones inputs); train = 3 x forward, loss not counted",
    }
    if name in OPEN_CLIP_TABLE_GFLOPS:
        result["open_clip_docs_table"] = {**OPEN_CLIP_TABLE_GFLOPS[name], "source": "open_clip docs/model_profile.csv"}
    return result
