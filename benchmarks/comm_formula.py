"""The formula benchmarks/comm_bytes.py checks its counts against (its doc states it), the facts of a model
it needs (P, the parameters ZeRO-3 keeps whole, D) and the extrapolation to ViT-B/32 on 64 GPUs."""

from __future__ import annotations

PERSISTENCE_THRESHOLD = 100_000  # DeepSpeed's default stage3_param_persistence_threshold (and zero3.json's)
# Extrapolation target: ViT-B/32 on 8 nodes x 8 H200, bf16 with fp32 gradient communication.
TARGET = {"model": "ViT-B-32", "ranks": 64, "batch_per_rank": 256, "grad_bytes": 4, "param_bytes": 2}


# ---------------------------------------------------------------------------------------------- model


def model_facts(name: str) -> dict:
    """P, the parameters ZeRO-3 keeps whole (numel <= the persistence threshold), and D."""
    from vlp.config import ModelConfig
    from vlp.model import build_model

    model = build_model(ModelConfig(name=name)).model
    params = [p for p in model.parameters() if p.requires_grad]
    clip = getattr(model, "clip", model)  # the open_clip model (the trainer wraps it later)
    dim = clip.text_projection.shape[1]
    return {
        "params": sum(p.numel() for p in params),
        "persisted": sum(p.numel() for p in params if p.numel() <= PERSISTENCE_THRESHOLD),
        "embed_dim": int(dim),
    }


def formula(stage: int, variant: str, n: int, facts: dict, batch: int, grad_bytes: int, param_bytes: int) -> dict:
    """Bytes one rank sends per step (the module's doc): engine (gradients, parameters) and loss."""
    f = (n - 1) / n
    p = facts["params"]
    grads = (1 if stage == 3 or variant == "r" else 2) * f * p * grad_bytes
    params = 0.0 if stage == 0 else f * p * param_bytes
    loss = 4 * (n - 1) * batch * facts["embed_dim"] * 4
    return {"grads": grads, "params": params, "engine": grads + params, "loss": loss, "total": grads + params + loss}


# ---------------------------------------------------------------------------------------------- target


def target_facts() -> dict:
    """ViT-B/32 as open_clip builds it (no weights: nothing is downloaded) and its training FLOPs."""
    import open_clip

    model = open_clip.create_model(TARGET["model"])
    params = list(model.parameters())
    return {
        "params": sum(p.numel() for p in params),
        "persisted": sum(p.numel() for p in params if p.numel() <= PERSISTENCE_THRESHOLD),
        "embed_dim": int(model.text_projection.shape[1]),
    }


def extrapolate(facts: dict, stages: list[tuple[int, str]]) -> list[dict]:
    rows = []
    n, b = TARGET["ranks"], TARGET["batch_per_rank"]
    for stage, variant in stages:
        f = formula(stage, variant, n, facts, b, TARGET["grad_bytes"], TARGET["param_bytes"])
        rows.append(
            {
                "stage": f"ZeRO-{stage}{variant}",
                "grads_gb": round(f["grads"] / 1e9, 3),
                "params_gb": round(f["params"] / 1e9, 3),
                "loss_gb": round(f["loss"] / 1e9, 3),
                "total_gb": round(f["total"] / 1e9, 3),
            }
        )
    return rows
