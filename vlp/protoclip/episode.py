"""ProtoCLIP's episodes: embed the coming episode, cluster it, back-translate, label each sample.

An episode is the next ``episode_steps`` batches of the stream. At its start the trainer replays
those batches once without gradient (the loader's exact resume makes the replay and the training
pass see the same samples), the projections of every image and caption are clustered, and each
sample's cluster labels are kept by key for the training pass. The first episode trains CLIP only.
An episode's labels are for this rank's own samples, so each rank checkpoints its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .kmeans import back_translated, kmeans
from .teacher import SentenceTeacher


@dataclass
class ProtoInputs:
    """This rank's projections and episode labels, and the episode's centroids (same on all ranks)."""

    image_proj: torch.Tensor  # B×P normalised h^I
    text_proj: torch.Tensor  # B×P normalised h^T
    image_labels: torch.Tensor  # B, cluster of each image in C^I
    text_labels: torch.Tensor  # B, cluster of each caption in C^T
    scale: torch.Tensor  # s_p
    image_centroids: torch.Tensor  # C^I, K×P
    text_centroids: torch.Tensor  # C^T
    image_from_text: torch.Tensor  # C^{I←T}
    text_from_image: torch.Tensor  # C^{T←I}
    external_labels: torch.Tensor | None = None  # B, cluster of each caption in the external teacher's space
    image_from_external: torch.Tensor | None = None  # C^{I←E}: image projections averaged by those clusters
    text_from_external: torch.Tensor | None = None  # C^{T←E}


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

    def inputs(self, keys: list[str], out: dict[str, torch.Tensor]) -> ProtoInputs:
        """The objective's proto inputs for a training batch of these sample keys."""
        missing = [k for k in keys if k not in self.labels]
        if missing:
            raise RuntimeError(f"episode {self.index} has no cluster labels for samples {missing[:3]}")
        device = out["image_proj"].device
        labels = torch.tensor([self.labels[k] for k in keys], dtype=torch.long, device=device)
        external = self.image_from_external is not None
        return ProtoInputs(
            image_proj=out["image_proj"].float(),
            text_proj=out["text_proj"].float(),
            image_labels=labels[:, 0],
            text_labels=labels[:, 1],
            scale=out["proto_scale"].float(),
            image_centroids=self.image_centroids.to(device),
            text_centroids=self.text_centroids.to(device),
            image_from_text=self.image_from_text.to(device),
            text_from_image=self.text_from_image.to(device),
            external_labels=labels[:, 2] if external else None,
            image_from_external=self.image_from_external.to(device) if external else None,
            text_from_external=self.text_from_external.to(device) if external else None,
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
    restarts: int = 1,
) -> Episode:
    """Cluster one episode's projections (this rank's rows; a collective over all ranks); with
    ``external`` (the sentence teacher's caption embeddings), cluster those too."""
    c_img, y_img = kmeans(image_proj, clusters, iters, seed * 1000 + 3 * index, rank, restarts)
    c_txt, y_txt = kmeans(text_proj, clusters, iters, seed * 1000 + 3 * index + 1, rank, restarts)
    columns = [y_img.tolist(), y_txt.tolist()]
    image_from_external = text_from_external = None
    if external is not None:
        _, y_ext = kmeans(external, clusters, iters, seed * 1000 + 3 * index + 2, rank, restarts)
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


class Episodes:
    """The run's episode schedule and current clustering; a stateful part of the checkpoint (per rank).

    ``embed(batch)`` returns the model's outputs for a batch without gradient (``image_proj``,
    ``text_proj``); the trainer supplies it so that device, precision and engine stay its business.
    """

    def __init__(
        self,
        clusters: int,
        episode_steps: int,
        iters: int,
        seed: int,
        rank: int,
        external: SentenceTeacher | None = None,
        restarts: int = 1,
    ):
        self.clusters, self.episode_steps, self.iters, self.restarts = clusters, episode_steps, iters, restarts
        self.seed, self.rank, self.external = seed, rank, external
        self.current: Episode | None = None

    def due(self, done_steps: int) -> bool:
        """Whether an episode starts after ``done_steps`` steps (the first episode has no clustering)."""
        return done_steps > 0 and done_steps % self.episode_steps == 0

    def start(self, done_steps: int, loader, batches: Iterator[dict], embed: Callable[[dict], dict]) -> Iterator[dict]:
        """Replay the coming episode's batches, cluster them, and return an iterator positioned back at
        the episode's start."""
        index = (done_steps - 1) // self.episode_steps
        start = loader.state_dict()
        keys, image_proj, text_proj, captions = [], [], [], []
        for _ in range(self.episode_steps):
            batch = next(batches)
            out = embed(batch)
            keys += batch["key"]
            captions += batch.get("caption", [])
            image_proj.append(out["image_proj"].float())
            text_proj.append(out["text_proj"].float())
        device = image_proj[0].device
        external = self.external(captions).to(device) if self.external else None
        self.current = cluster_episode(
            index,
            keys,
            torch.cat(image_proj),
            torch.cat(text_proj),
            self.clusters,
            self.iters,
            self.seed,
            self.rank,
            external=external,
            restarts=self.restarts,
        )
        loader.load_state_dict(start)
        return iter(loader)

    def inputs(self, keys: list[str], out: dict[str, torch.Tensor]) -> ProtoInputs | None:
        """The objective's proto inputs (None before the first clustering: CLIP only)."""
        return None if self.current is None else self.current.inputs(keys, out)

    def _path(self, folder: Path) -> Path:
        return Path(folder) / f"proto_rank{self.rank}.pt"

    def save(self, folder: Path) -> None:
        if self.current is not None:
            torch.save(self.current.state_dict(), self._path(folder))

    def load(self, folder: Path) -> None:
        """The saved episode, with every saved rank's labels merged: labels are keyed by sample and the
        centroids are the same on every rank, so a rank finds its samples' labels whichever rank
        clustered them, also after a change of world size."""
        paths = sorted(Path(folder).glob("proto_rank*.pt"))
        if not paths:  # absent before the first clustering
            return
        episodes = [Episode.from_state_dict(torch.load(p, map_location="cpu", weights_only=True)) for p in paths]
        self.current = episodes[0]
        for other in episodes[1:]:
            self.current.labels.update(other.labels)
