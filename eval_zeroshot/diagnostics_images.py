"""The image tower's features for the relation probe: the pooled, normalised embedding and the features
just before the pooling (open_clip's ModifiedResNet and VisionTransformer), captured with a forward hook
so that the model itself is left as it is; and the side of the images the tower takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def spatial_hook_point(visual: torch.nn.Module) -> tuple[torch.nn.Module | None, str]:
    """Where the features before pooling are taken: ``(module, kind)``; ``(None, reason)`` when unknown.

    kind ``"attnpool_input"``: open_clip's ModifiedResNet, the (B, C, H, W) input of ``attnpool``.
    kind ``"transformer_output"``: open_clip's VisionTransformer, the token sequence out of
    ``transformer`` (class token included), before ``ln_post`` and the pooling.
    """
    pool = getattr(visual, "attnpool", None)
    if isinstance(pool, torch.nn.Module):
        return pool, "attnpool_input"
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return visual.transformer, "transformer_output"
    return None, f"no known pooling in {type(visual).__name__} (open_clip ModifiedResNet / VisionTransformer only)"


@torch.no_grad()
def encode_probe_images(
    model: torch.nn.Module,
    preprocess: Callable,
    images: Sequence,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """``(pooled, spatial, kind)``: the normalised ``encode_image`` output and the flattened features
    before the pooling (``None`` and the reason in ``kind`` when the tower is not one we know)."""
    module, kind = spatial_hook_point(model.visual)
    captured: list[torch.Tensor] = []

    def pre_hook(_module, args):
        captured.append(args[0])

    def post_hook(_module, _args, output):
        captured.append(output)

    handle = None
    if kind == "attnpool_input":
        handle = module.register_forward_pre_hook(pre_hook)
    elif kind == "transformer_output":
        handle = module.register_forward_hook(post_hook)
    pooled, spatial = [], []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.stack([preprocess(im) for im in images[start : start + batch_size]]).to(device)
            captured.clear()
            pooled.append(F.normalize(model.encode_image(batch).float(), dim=-1).cpu())
            if handle is not None:
                feats = captured[-1]
                # open_clip's Transformer returns batch-first tokens (it transposes back itself when it
                # runs sequence-first inside); older versions returned (L, B, D).
                if kind == "transformer_output" and feats.shape[0] != len(batch) and feats.shape[1] == len(batch):
                    feats = feats.transpose(0, 1)
                spatial.append(feats.float().reshape(len(batch), -1).cpu())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(pooled), (torch.cat(spatial) if spatial else None), kind


def model_image_size(model: torch.nn.Module, preprocess: Callable | None = None, default: int = 224) -> int:
    """The image tower's input side: ``model.visual.image_size``, else the eval transform's resize."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None and preprocess is not None:
        for t in getattr(preprocess, "transforms", ()):
            size = getattr(t, "size", None) or getattr(t, "max_size", None)
            if size is not None:
                break
    if size is None:
        return default
    return int(size[0] if isinstance(size, tuple | list) else size)
