"""ProtoCLIP's parts as the trainer calls them: K-means over ranks, back translation, the episode's
round trip through a checkpoint, and the replay that clusters an episode."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tests.runs import free_port
from vlp.protoclip.episode import Episode, Episodes, cluster_episode
from vlp.protoclip.kmeans import back_translated, kmeans


def blobs(n_per: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated 2-D blobs; returns points and their true blob."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(n_per)
    return centres[truth] + 0.3 * torch.randn(3 * n_per, 2, generator=g), truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two labelings that group the points identically (cluster ids may differ)."""
    return all(len(set(b[a == label].tolist())) == 1 for label in a.unique()) and len(a.unique()) == len(b.unique())


def test_kmeans_finds_separated_blobs_and_their_centres():
    x, truth = blobs()
    # Seed 2 starts from one point of each blob (seed 0 starts with two in one blob and ends in a
    # local optimum: one start, no restarts).
    first = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))[:3]
    assert sorted(truth[first].tolist()) == [0, 1, 2]
    centroids, labels = kmeans(x, 3, iters=20, seed=2)
    assert same_partition(labels, truth)
    for seed in (0, 2):
        centroids, labels = kmeans(x, 3, iters=20, seed=seed)
        for c in range(3):  # a Lloyd fixed point either way
            assert torch.allclose(centroids[c], x[labels == c].mean(0), atol=1e-5), (seed, c)
        assert torch.equal(kmeans(x, 3, iters=20, seed=seed)[1], labels)  # seeded
    with pytest.raises(ValueError, match="cannot make 5 clusters"):
        kmeans(x[:4], 5, iters=1, seed=0)


def duplicates() -> torch.Tensor:
    """Three distinct values, two of them repeated: a start on two copies of one value leaves a
    cluster empty."""
    return torch.tensor([[0.0, 0.0]] * 20 + [[10.0, 0.0]] * 20 + [[100.0, 0.0]])


def test_restarts_keep_the_best_run_and_empty_clusters_are_reseeded():
    x, truth = blobs()
    assert not same_partition(kmeans(x, 3, iters=20, seed=0)[1], truth)  # one start: a local optimum
    assert same_partition(kmeans(x, 3, iters=20, seed=0, restarts=3)[1], truth)  # as ProtoCLIP's nredo=3
    points = duplicates()
    first = torch.randperm(len(points), generator=torch.Generator().manual_seed(5))[:3]
    assert points[first, 0].tolist() == [0.0, 0.0, 10.0]  # two identical starts: one cluster empties
    centroids, labels = kmeans(points, 3, iters=10, seed=5)
    # Kept stale, the empty centre would stay on 0 and 100 would join 10's cluster; re-seeded with the
    # farthest point it takes 100, and every point sits on its centre.
    assert sorted(centroids[:, 0].tolist()) == [0.0, 10.0, 100.0]
    assert torch.equal(centroids[labels], points)


def test_back_translation_means_by_the_other_modality():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    other = torch.tensor([1, 1, 0])
    # cluster 0 holds row 2, cluster 1 rows 0 and 1, cluster 2 nothing (zero)
    expected = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 0.0]])
    assert torch.allclose(back_translated(h, other, 3), expected)


def _ranks_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, _ = blobs()
    rows = slice(rank * 30, (rank + 1) * 30)  # ranks hold different numbers of points of each blob
    centroids, labels = kmeans(x[rows], 3, iters=20, seed=0, rank=rank, restarts=3)
    translated = back_translated(x[rows], labels, 3)
    points = duplicates()
    mine = slice(0, 30) if rank == 0 else slice(30, None)  # 100 lives on rank 1 only
    reseeded = kmeans(points[mine], 3, iters=10, seed=5, rank=rank)
    torch.save((centroids, labels, translated, *reseeded), os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_cluster_as_one_process_holding_everything(tmp_path):
    mp.spawn(_ranks_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    x, _ = blobs()
    centroids, labels = kmeans(x, 3, iters=20, seed=0, restarts=3)
    one_c, one_y = kmeans(duplicates(), 3, iters=10, seed=5)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r, (c, y, t, dup_c, dup_y) in enumerate(parts):
        assert torch.allclose(c, centroids, atol=1e-6), r  # identical centroids on every rank
        assert torch.equal(y, labels[r * 30 : (r + 1) * 30])
        assert torch.allclose(t, back_translated(x, labels, 3), atol=1e-6)
        assert torch.equal(dup_c, one_c)  # the re-seeding point comes from rank 1 to both ranks
        assert torch.equal(dup_y, one_y[:30] if r == 0 else one_y[30:])


def test_episode_round_trip_through_a_checkpoint_file(tmp_path):
    x, _ = blobs(n_per=4)
    keys = [f"k{i:03d}" for i in range(len(x))]
    image, text = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(x.flip(1), dim=-1)
    episode = cluster_episode(2, keys, image, text, clusters=3, iters=5, seed=1, rank=0, external=image)
    torch.save(episode.state_dict(), tmp_path / "e.pt")
    back = Episode.from_state_dict(torch.load(tmp_path / "e.pt", weights_only=True))
    assert back.index == 2 and back.labels == episode.labels and len(back.labels[keys[0]]) == 3
    for name in ("image_centroids", "text_centroids", "image_from_text", "text_from_image", "image_from_external"):
        assert torch.equal(getattr(back, name), getattr(episode, name)), name
    out = {"image_proj": image[:2], "text_proj": text[:2], "proto_scale": torch.tensor([3.0])}
    inputs = back.inputs(keys[:2], out)
    assert inputs.image_labels.tolist() == [episode.labels[k][0] for k in keys[:2]]
    with pytest.raises(RuntimeError, match="no cluster labels"):
        back.inputs(["unknown"], out)


class ReplayLoader:
    """A stream of batches with a resumable position, like StreamingLoader's state_dict."""

    def __init__(self, batches: list[dict]):
        self.batches, self.position = batches, 0

    def __iter__(self):
        while True:
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def test_episode_replay_clusters_the_coming_batches_and_rewinds(tmp_path):
    x, truth = blobs(n_per=4)
    batches = [{"key": [f"k{i}" for i in range(b, b + 4)], "x": x[b : b + 4]} for b in range(0, 12, 4)]
    loader = ReplayLoader(batches)
    stream = iter(loader)
    next(stream)  # one step of the previous episode consumed
    episodes = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=0)
    assert not episodes.due(0) and episodes.due(2) and not episodes.due(3)

    def embed(batch):
        return {"image_proj": batch["x"], "text_proj": batch["x"]}

    stream = episodes.start(2, loader, stream, embed)
    assert set(episodes.current.labels) == {f"k{i}" for i in range(4, 12)}  # the next two batches
    assert next(stream)["key"] == batches[1]["key"]  # and training resumes where the replay began
    episodes.save(tmp_path)
    fresh = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=0)
    fresh.load(tmp_path)
    assert fresh.current.labels == episodes.current.labels
    # A rank that did not save (the run now has more ranks) takes every saved rank's labels, keyed by
    # sample, so it finds its samples' clusters whichever rank clustered them.
    new_rank = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=1)
    new_rank.load(tmp_path)
    assert new_rank.current.labels == episodes.current.labels
    rank1 = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=1)
    rank1.current = type(episodes.current)(**{**vars(episodes.current), "labels": {"z1": (0, 1)}})
    rank1.save(tmp_path)
    one = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=0)  # two ranks saved, one resumes
    one.load(tmp_path)
    assert one.current.labels == {**episodes.current.labels, "z1": (0, 1)}
    before = Episodes(clusters=3, episode_steps=2, iters=10, seed=0, rank=0)
    before.load(tmp_path / "nowhere")  # no file: before the first clustering
    assert before.current is None


def test_projection_heads_get_no_weight_decay():
    from vlp.model import DualEncoder, param_groups
    from vlp.protoclip.heads import ProtoHeads

    clip = torch.nn.Module()
    clip.proj = torch.nn.Linear(4, 4)
    clip.logit_scale = torch.nn.Parameter(torch.zeros(1))
    model = DualEncoder(clip, ProtoHeads(4, 8, 3))
    decay, no_decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["clip.proj.weight"]
    assert {names[id(p)] for p in no_decay["params"]} >= {"heads.image_head.0.weight", "heads.logit_scale"}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0


def reference_lloyd(x: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's algorithm in float64 with the full N×K distance matrix (the pre-chunking code, one
    process): the same seeded start and the same re-seeding of an empty cluster with the points
    farthest from their updated centres. Returns (centroids, labels, clusters re-seeded)."""
    xd = x.double()
    centroids = xd[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]].clone()
    reseeded = 0
    for _ in range(iters):
        labels = torch.cdist(xd, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xd)
        sizes = torch.bincount(labels, minlength=k).double()
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = (~filled).nonzero().flatten()
        if len(empty):
            distance = (xd - centroids[labels]).pow(2).sum(1)
            centroids[empty] = xd[distance.topk(len(empty)).indices]
            reseeded += len(empty)
    return centroids, torch.cdist(xd, centroids).argmin(1), reseeded


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_fp32_assignment_gives_the_float64_nearest_centroid(dtype):
    from vlp.protoclip.kmeans import assign

    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 8, generator=g).to(dtype)
    centroids = torch.randn(40, 8, generator=g, dtype=torch.float64)
    centroids[7] = 50.0  # nearest to no point: an empty cluster must not catch any row
    reference = torch.cdist(x.double(), centroids).argmin(1)
    chunk_bytes = 40 * 4 * 32  # 32 rows of fp32 scores per chunk: 10 chunks, the last one short
    labels = assign(x, centroids, chunk_bytes=chunk_bytes)
    assert torch.equal(labels, reference)
    assert 7 not in labels.tolist() and len(labels.unique()) > 30
    assert torch.equal(assign(x, centroids), reference)  # one chunk (the default bound) agrees too


def test_kmeans_in_chunks_matches_a_float64_reference_lloyd(monkeypatch):
    import vlp.protoclip.kmeans as km

    monkeypatch.setattr(km, "CHUNK_BYTES", 1024)  # a few rows per chunk: many chunks per pass
    g = torch.Generator().manual_seed(4)
    centres = 20.0 * torch.randn(20, 8, generator=g)
    separated = centres.repeat_interleave(15, 0) + 0.5 * torch.randn(300, 8, generator=g)
    many = torch.randn(300, 8, generator=g)
    cases = [  # (points, k, iters, seed, whether a cluster empties on the way)
        (separated, 20, 10, 0, False),
        (many, 60, 10, 1, False),
        (separated, 30, 10, 4, True),  # 30 clusters on 20 blobs: one empties and is re-seeded
        (duplicates(), 3, 10, 5, True),
    ]
    for i, (x, k, iters, seed, empties) in enumerate(cases):
        ref_centroids, ref_labels, reseeded = reference_lloyd(x, k, iters, seed)
        assert (reseeded > 0) == empties, (i, reseeded)
        centroids, labels = km.kmeans(x, k, iters=iters, seed=seed)
        assert torch.equal(labels, ref_labels), i
        assert centroids.dtype == x.dtype and torch.allclose(centroids.double(), ref_centroids, atol=1e-6), i
