"""The global data order (data_pipelines.loader.order): a pure function of the shards' sample counts,
the seed and the epoch, evaluated here for job shapes up to 64 ranks x 8 workers without launching one."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from data_pipelines.loader.order import EpochOrder, rank_positions, shuffled_shards
from tests.conftest import REPO

COUNTS = [7, 0, 12, 5, 9, 30, 1, 16]  # uneven shards, one empty


def positions(order: EpochOrder) -> list[tuple[int, int]]:
    return [order.at(p) for p in range(len(order))]


def test_split_mode_holds_every_sample_once_and_reshuffles_every_epoch():
    seen = {}
    for epoch in range(3):
        order = EpochOrder(COUNTS, mode="split", seed=3, epoch=epoch, window=10)
        got = positions(order)
        assert sorted(got) == sorted((s, i) for s, n in enumerate(COUNTS) for i in range(n))
        seen[epoch] = got
    assert seen[0] != seen[1] != seen[2]
    again = EpochOrder(COUNTS, mode="split", seed=3, epoch=1, window=10)
    assert positions(again) == seen[1]  # deterministic
    assert positions(EpochOrder(COUNTS, mode="split", seed=4, epoch=1, window=10)) != seen[1]


@pytest.mark.parametrize("window", [1, 4, 25])
def test_a_sample_moves_at_most_a_window_from_its_laid_out_place(window):
    order = EpochOrder(COUNTS, mode="split", seed=0, epoch=0, window=window)
    laid_out = [(s, i) for s in shuffled_shards(len(COUNTS), seed=0, epoch=0) for i in range(COUNTS[s])]
    where = {sample: q for q, sample in enumerate(laid_out)}
    moves = [abs(where[order.at(p)] - p) for p in range(len(order))]
    assert max(moves) <= window - 1
    if window > 1:
        assert max(moves) > 0


def test_global_batches_split_into_ranks_the_same_way_for_any_shape():
    """64 ranks x 4 per rank and 8 ranks x 32 read the same 256 positions as global batch i: rank r's
    part is the r-th slice, so the job's shape decides who reads a sample, never which batch holds it."""
    for world, per_rank in [(64, 4), (8, 32), (1, 256)]:
        for batch in (0, 3):
            parts = [rank_positions(batch, global_batch=256, per_rank=per_rank, rank=r, start=40) for r in range(world)]
            assert [p for part in parts for p in part] == list(range(40 + batch * 256, 40 + (batch + 1) * 256))


def test_resampled_draws_follow_the_weights_and_depend_on_the_position_alone():
    counts = [10] * 4 + [10] * 4
    sources = [0] * 4 + [1] * 4
    order = EpochOrder(counts, mode="resampled", seed=1, epoch=0, sources=sources, weights=[1, 3], length=20000)
    drawn = Counter(sources[order.at(p)[0]] for p in range(len(order)))
    assert abs(drawn[1] / len(order) - 0.75) < 0.02
    fresh = EpochOrder(counts, mode="resampled", seed=1, epoch=0, sources=sources, weights=[1, 3], length=20000)
    assert [fresh.at(p) for p in (19999, 5, 8192)] == [order.at(p) for p in (19999, 5, 8192)]
    assert all(0 <= i < 10 for _, i in map(order.at, range(100)))


def test_stand_ins_are_a_function_of_the_position_and_attempt():
    a = EpochOrder(COUNTS, mode="split", seed=0, epoch=2, window=8)
    b = EpochOrder(COUNTS, mode="split", seed=0, epoch=2, window=8)
    assert [a.spare(p, k) for p in range(5) for k in (1, 2)] == [
        b.spare(p, k) for p in (4, 3, 2, 1, 0)[::-1] for k in (1, 2)
    ]
    assert len({a.spare(0, k) for k in range(1, 30)}) > 5


def test_nothing_to_draw_from_is_refused():
    with pytest.raises(ValueError, match="no shard holds a sample"):
        EpochOrder([0, 0], mode="resampled", seed=0, epoch=0)
    with pytest.raises(IndexError, match="outside the epoch"):
        EpochOrder([3], mode="split", seed=0, epoch=0).at(3)


@pytest.mark.parametrize("recipe", ["degla_vitb32", "negclip_vitb32"])
def test_vitb32_recipes_say_any_shard_count_feeds_any_job_shape(recipe):
    text = (REPO / f"configs/{recipe}.yaml").read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"any number of shards feeds any number of GPUs", header), header
    assert "needs >= world size" not in header
