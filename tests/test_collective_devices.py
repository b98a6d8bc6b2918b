"""Collectives on the device their process group serves: the GPU bug, reproduced on a CPU.

Under NCCL a collective of a CPU tensor raises "No backend type associated with device type cpu". A
process group whose only backend is bound to CUDA (``backend="cuda:gloo"``) rejects CPU tensors the
same way on a machine without a GPU, so the trainer's collective helpers run here under such a group,
on 2 ranks: every helper the trainer, the objectives and ProtoCLIP call with host values must work
there (vlp.collectives routes them through a gloo group for CPU objects), and a raw CPU collective on
the default group must fail with the message that names what went wrong.
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.runs import free_port


def _helpers_under_cuda_only_group(rank: int, world: int, port: int, errors) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend="cuda:gloo", rank=rank, world_size=world)
    try:
        from vlp.collectives import (
            all_reduce_sum,
            any_rank,
            broadcast_coalesced,
            gather_without_grad,
            host_max,
            max_over_ranks,
        )
        from vlp.protoclip.kmeans import back_translated, kmeans
        from vlp.train.agreement import StepWindow
        from vlp.train.watchdog import wrong_device

        # The class of bug, as NCCL shows it: the default group has no CPU backend.
        try:
            dist.all_reduce(torch.ones(1))
        except RuntimeError as exn:
            message = wrong_device(exn)
            assert message and "does not serve" in message and "cuda:gloo" in message, message
        else:
            raise AssertionError("a CPU tensor went through a CUDA-only group: the reproduction is void")

        # The trainer's agreements between ranks (setup's failure check, stop signal, peak memory).
        assert any_rank(rank == 1) is True and any_rank(False) is False
        assert max_over_ranks(10.0 + rank) == 11.0
        assert host_max([rank, -rank]) == [1.0, 0.0]
        # Gathers and sums of CPU tensors (masks, counts, k-means' sums when features live on the CPU).
        assert gather_without_grad(torch.tensor([rank, rank])).tolist() == [0, 0, 1, 1]
        assert all_reduce_sum(torch.tensor([1.0 + rank])).tolist() == [3.0]
        # BatchNorm statistics, one broadcast for every dtype.
        stats = [torch.full((3,), float(rank)), torch.tensor(7 * rank), torch.full((2,), rank, dtype=torch.bfloat16)]
        broadcast_coalesced(stats, src=0)
        assert all(float(t.float().abs().sum()) == 0 for t in stats)
        # The loop's agreement: values of two steps, one skipped on rank 1's word (a host bool).
        window = StepWindow(torch.device("cpu"))
        window.add(1, {"loss": torch.tensor(1.0 + rank)}, torch.tensor(True), 0.1, 0.0, 1.0)
        window.add(2, {"loss": torch.tensor(3.0)}, rank == 0, 0.1, 0.0, 1.0)
        agreed = window.agree(stop=rank == 1, peak_memory_mb=100.0 * (rank + 1))
        assert [r.values["loss"] for r in agreed.rows] == [1.5, 3.0]
        assert [r.applied for r in agreed.rows] == [True, False]
        assert agreed.stop and agreed.peak_memory_mb == 200.0
        # ProtoCLIP's clustering and back translation of CPU features.
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(40, 8, generator=g)
        centroids, labels = kmeans(x, 4, 3, seed=0, rank=rank)
        assert centroids.shape == (4, 8) and labels.shape == (40,)
        assert back_translated(x, labels, 4).shape == (4, 8)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        errors.put(f"rank {rank}: {traceback.format_exc()}")
    finally:
        dist.destroy_process_group()


def test_collective_helpers_work_under_a_group_without_a_cpu_backend():
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_helpers_under_cuda_only_group, args=(r, 2, port, errors)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
            pytest.fail("a rank hung in a collective")
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, "\n".join(found)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
