"""Split mode's shard plan, evaluated for big job shapes (64 ranks x 8 workers) without launching
anything: every reader gets shards in every epoch, every shard is read once per epoch, the plan is
deterministic and changes with the epoch; too few shards are refused at start with the numbers; the
loader reads what the plan says; the ViT-B/32 recipes' shard counts per world size match the rule."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from data_pipelines.loader import DataPipelineError, StreamingLoader
from data_pipelines.loader.plan import idle_readers, rank_shards, readers, shard_plan, split_shortfall
from data_pipelines.shards.specs import parse_sources
from tests.conftest import simple_samples, write_shards

REPO = Path(__file__).resolve().parents[1]


def urls_of(n: int) -> list[str]:
    return [f"s3://bucket/coco/{i:06d}.tar" for i in range(n)]


# (shards, world size, workers): 8 nodes x 8 GPUs x 8 workers, exactly and unevenly fed; smaller jobs;
# the in-process loader (workers=0: one reader per rank).
SHAPES = [
    (512, 64, 8),
    (600, 64, 8),
    (1000, 64, 8),
    (128, 16, 8),
    (130, 16, 8),
    (64, 8, 8),
    (100, 8, 8),
    (2, 2, 0),
    (5, 2, 0),
    (7, 1, 4),
]


@pytest.mark.parametrize("n,world,workers", SHAPES)
def test_every_reader_gets_data_and_every_shard_is_read_once_per_epoch(n, world, workers):
    urls = urls_of(n)
    assert split_shortfall(n, world_size=world, workers=workers) is None
    for epoch in range(3):
        plan = shard_plan(urls, seed=7, epoch=epoch, world_size=world, workers=workers)
        assert len(plan) == world and all(len(ws) == max(1, workers) for ws in plan)
        assert idle_readers(plan) == []
        read = Counter(u for ws in plan for shards in ws for u in shards)
        assert read == Counter(urls)  # each shard exactly once: every sample read once per epoch
        sizes = [len(shards) for ws in plan for shards in ws]
        assert len(sizes) == readers(world, workers) and max(sizes) - min(sizes) <= 1  # balanced


def test_the_plan_is_deterministic_and_changes_with_epoch_and_seed():
    urls = urls_of(512)
    plan = shard_plan(urls, seed=0, epoch=3, world_size=64, workers=8)
    assert shard_plan(list(urls), seed=0, epoch=3, world_size=64, workers=8) == plan
    assert shard_plan(urls, seed=0, epoch=4, world_size=64, workers=8) != plan
    assert shard_plan(urls, seed=1, epoch=3, world_size=64, workers=8) != plan
    for rank, worker in [(0, 0), (17, 5), (63, 7)]:
        assert (
            rank_shards(urls, seed=0, epoch=3, world_size=64, workers=8, rank=rank, worker=worker)
            == (plan[rank][worker])
        )
    with pytest.raises(ValueError, match="no reader"):
        rank_shards(urls, seed=0, epoch=3, world_size=64, workers=8, rank=64, worker=0)
    with pytest.raises(ValueError, match="world_size"):
        shard_plan(urls, seed=0, epoch=0, world_size=0, workers=8)


def test_the_plan_keeps_the_data_order_runs_had_before_it():
    """Pinned: the (seed, epoch) shuffle dealt to ranks then workers, as ShardStream always did, so
    existing runs (and their checkpoints' exact resume) read the same shards in the same order."""
    urls = [f"s-{i:02d}.tar" for i in range(10)]
    assert shard_plan(urls, seed=0, epoch=0, world_size=2, workers=2) == [
        [["s-06.tar", "s-05.tar", "s-09.tar"], ["s-03.tar", "s-08.tar"]],
        [["s-04.tar", "s-01.tar", "s-07.tar"], ["s-02.tar", "s-00.tar"]],
    ]
    assert shard_plan(urls, seed=0, epoch=1, world_size=2, workers=2) == [
        [["s-02.tar", "s-05.tar", "s-03.tar"], ["s-08.tar", "s-07.tar"]],
        [["s-06.tar", "s-01.tar", "s-09.tar"], ["s-00.tar", "s-04.tar"]],
    ]


def test_too_few_shards_are_refused_with_the_numbers():
    message = split_shortfall(60, world_size=64, workers=8)
    assert message is not None
    assert "60 shards cannot feed 64 ranks x 8 workers = 512 readers in split mode" in message
    assert "at least 512 shards" in message and "resampled" in message
    assert "workers per rank" not in message  # 60 < 64 ranks: no worker count helps
    assert "at most 12 workers per rank" in split_shortfall(100, world_size=8, workers=16)
    in_process = split_shortfall(1, world_size=2, workers=0)
    assert in_process is not None and "1 shards cannot feed 2 ranks x 1 in-process reader" in in_process
    assert split_shortfall(511, world_size=64, workers=8) is not None
    assert split_shortfall(512, world_size=64, workers=8) is None


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (3, 2), (4, 3), (8, 8)])
def test_the_shortfall_check_says_exactly_when_some_reader_would_idle(world, workers):
    for n in range(0, readers(world, workers) + 3):
        for epoch in range(3):
            plan = shard_plan(urls_of(n), seed=epoch, epoch=epoch, world_size=world, workers=workers)
            assert (split_shortfall(n, world_size=world, workers=workers) is None) == (not idle_readers(plan)), n


def loader(spec, preprocess, tokenizer, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("drop_last", False)
    return StreamingLoader(spec, preprocess=preprocess, tokenizer=tokenizer, **kw)


def test_the_loader_refuses_at_construction_with_the_numbers(tmp_path, preprocess, tokenizer):
    write_shards(tmp_path, simple_samples(6), shard_size=2)  # 3 shards
    for rank in range(2):
        with pytest.raises(DataPipelineError, match=r"3 shards cannot feed 2 ranks x 2 workers = 4 readers"):
            loader(tmp_path, preprocess, tokenizer, rank=rank, world_size=2, num_workers=2)
    with pytest.raises(DataPipelineError, match=r"cannot feed 4 ranks x 1 in-process reader \(workers=0\) = 4"):
        loader(tmp_path, preprocess, tokenizer, rank=0, world_size=4)
    # What is fed is accepted: resampled mode, or as many readers as shards.
    loader(tmp_path, preprocess, tokenizer, rank=1, world_size=2, num_workers=2, mode="resampled")
    loader(tmp_path, preprocess, tokenizer, rank=2, world_size=3, num_workers=1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_reads_what_the_plan_says(tmp_path, preprocess, tokenizer, num_workers):
    write_shards(tmp_path, simple_samples(20), shard_size=2)  # 10 shards: 2 ranks x 2 workers, uneven
    urls = [u for s in parse_sources(str(tmp_path)) for u in s.urls]
    in_shard = {u: [f"s{2 * i:05d}", f"s{2 * i + 1:05d}"] for i, u in enumerate(urls)}
    read: dict[tuple[int, int], list[str]] = {}
    for rank in range(2):
        ld = loader(
            tmp_path,
            preprocess,
            tokenizer,
            rank=rank,
            world_size=2,
            num_workers=num_workers,
            epochs=2,
            shuffle_buffer=0,
        )
        for batch in ld:
            read.setdefault((rank, ld.epoch), []).extend(batch["key"])
    for epoch in range(2):
        plan = shard_plan(urls, seed=0, epoch=epoch, world_size=2, workers=num_workers)
        for rank in range(2):
            planned = [k for shards in plan[rank] for u in shards for k in in_shard[u]]
            if num_workers == 0:  # one reader: its shards in the plan's order
                assert read[rank, epoch] == planned
            else:  # the DataLoader interleaves its workers' batches
                assert sorted(read[rank, epoch]) == sorted(planned)
        every = sorted(read[0, epoch] + read[1, epoch])
        assert every == [f"s{i:05d}" for i in range(20)]  # every sample once per epoch


@pytest.mark.parametrize("recipe", ["degla_vitb32", "negclip_vitb32"])
def test_vitb32_recipes_state_the_shards_each_world_size_needs(recipe):
    """The header's table (GPUs -> shards) is the split-mode rule for the recipe's workers, and it
    reaches 8 nodes x 8 GPUs; the recipe streams in split mode from a folder (any count >= the table's)."""
    from vlp.config import load_config

    cfg = load_config(REPO / f"configs/{recipe}.yaml")
    text = (REPO / f"configs/{recipe}.yaml").read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    table = re.search(r"needs >= world size x (\d+) shards: (.*?); with fewer", header)
    assert table, header
    assert int(table[1]) == cfg.data.workers == 8
    rows = {int(g): int(s) for g, s in re.findall(r"(\d+) GPUs? (?:\(\d+ nodes\) )?(\d+)", table[2])}
    assert rows[8] == 64 and rows[64] == 512
    for gpus, shards in rows.items():
        assert shards == readers(gpus, cfg.data.workers)
        assert split_shortfall(shards, world_size=gpus, workers=cfg.data.workers) is None
        assert split_shortfall(shards - 1, world_size=gpus, workers=cfg.data.workers) is not None
    assert cfg.data.mode == "split" and cfg.data.train.endswith("/")
    assert "vlp-data shards --shard-size" in header and "data.mode=resampled" in header
