"""The hot loop's budget: on a step that neither logs, evaluates nor saves, the trainer asks for no host
sync and no collective beyond the engine's own (gradient reduce) and the loss's feature gathers, except
the ranks' agreement every train.agree_every steps: on average at most one per four such steps, per rank.

Counted on 2-rank DeepSpeed ZeRO-2 CPU runs of the demo recipe (ResNet tower with BatchNorm, bf16) and
the DeGLA recipe (EMA teacher, hard negatives) by tests/sync_audit.py. Before this budget the demo
recipe asked for 63 trainer collectives per step and the DeGLA recipe for 9, plus 4-6 host syncs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch.distributed as dist

from tests.runs import REPO, launch_cmd, run

pytestmark = [pytest.mark.slow, pytest.mark.scale]  # make scale, not make test
STEPS = 14
AGREE_EVERY = 10  # the default of train.agree_every
BUDGET = 1 / 4  # trainer collectives (and host syncs) per non-logging step, on average
GATHER = "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"


def _launch(recipe: str, shards, out, audit, extra: list[str]):
    overrides = [
        "--config",
        str(REPO / f"configs/{recipe}.yaml"),
        f"output_dir={out}",
        "data.shapes_world=",
        f"data.train={shards}",
        "data.workers=0",
        "train.batch_size=8",
        f"train.max_steps={STEPS}",
        "train.warmup_steps=2",
        "train.log_every=1000",  # logs at step 1 and at the last step only
        "train.save_every=1000",  # saves at the last step only
        "train.threads=1",
        "eval.zeroshot=[]",
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "VLP_TRAIN_HOOKS": "tests.sync_audit:Audit",
        "VLP_AUDIT_OUT": str(audit),
    }
    return run(launch_cmd("cpu_deepspeed_zero2.yaml", overrides), env=env, timeout=400)


@pytest.mark.parametrize(
    "recipe,extra",
    [
        ("demo", []),  # the demo's ResNet tower: BatchNorm statistics, bf16
        ("degla", [f"model.name={REPO / 'configs/models/vlp-tiny-vit.json'}"]),  # the tiny ViT, as issued
    ],
)
def test_non_logging_steps_stay_within_the_collective_and_sync_budget(recipe, extra, train_shards, tmp_path):
    audit = tmp_path / "audit"
    proc = _launch(recipe, train_shards, tmp_path / "run", audit, extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    quiet = [s for s in range(2, STEPS)]  # neither logs (1, STEPS), evaluates nor saves (STEPS)
    for rank in (0, 1):
        counted = json.loads((audit / f"rank{rank}.json").read_text())
        trainer = {int(k): v for k, v in counted["trainer"].items()}
        owners = {int(k): v for k, v in counted["owners"].items()}
        collectives = sum(sum(e.startswith("collective:") for e in trainer.get(s, [])) for s in quiet)
        syncs = sum(sum(e.startswith("sync:") for e in trainer.get(s, [])) for s in quiet)
        where = {s: trainer[s] for s in quiet if trainer.get(s)}
        assert collectives / len(quiet) <= BUDGET, (rank, collectives, where)
        assert syncs / len(quiet) <= BUDGET, (rank, syncs, where)
        # The agreement is the only thing the trainer does on such steps, and only every AGREE_EVERY.
        for s in quiet:
            expected = [f"collective:{GATHER}", "sync:tolist"] if s % AGREE_EVERY == 0 else []
            assert sorted(trainer.get(s, [])) == expected, (rank, s, trainer.get(s))
        # The audit sees the engine and the loss work (it would count a trainer collective if there were one).
        assert all(owners[s].get("engine:collective", 0) > 0 for s in quiet), owners
        assert all(owners[s].get("loss:collective", 0) > 0 for s in quiet), owners
        # Logging and saving steps do talk: the audit is not blind to the trainer.
        assert any(e.startswith("collective:") for e in trainer[1] + trainer[STEPS]), (trainer[1], trainer[STEPS])
