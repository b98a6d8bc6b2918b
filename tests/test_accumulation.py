"""Exact contrastive gradient accumulation: one optimizer step with (batch 16, k=1), (batch 8, k=2) and
(2 ranks x batch 4, k=2 under DeepSpeed ZeRO-2) gives the same weights, for clip, negclip and degla."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO
from tests.test_train import BIN, launch_cmd, max_diff, metrics, run, shards, weights  # noqa: F401

pytestmark = pytest.mark.slow

RECIPES = {
    "clip": ["objective.terms={clip: 1.0}"],
    "negclip": ["objective.terms={negclip: 1.0}", "data.negatives=4"],
    "degla": [
        "objective.terms={negclip: 1.0, tgc: 0.1, igc: 0.1, distill: 0.005}",
        "data.negatives=4",
        "objective.ema_decay=0.99",
    ],
}


def overrides(shards, out, batch: int, k: int, recipe: str) -> list[str]:  # noqa: F811
    return [
        f"output_dir={out}",
        f"data.train={shards}",
        "data.workers=0",
        "data.shuffle_buffer=0",
        f"model.name={REPO / 'configs/models/vlp-tiny-vit.json'}",
        f"train.batch_size={batch}",
        f"train.accum_steps={k}",
        "train.max_steps=1",
        "train.precision=fp32",
        "train.log_every=1",
        "train.threads=1",
        "train.lr=1e-3",
        *RECIPES[recipe],
    ]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_accumulated_step_equals_the_large_batch(recipe, shards, tmp_path):  # noqa: F811
    runs = {
        "16x1": [str(BIN / "vlp-train"), *overrides(shards, tmp_path / "a", 16, 1, recipe)],
        "8x2": [str(BIN / "vlp-train"), *overrides(shards, tmp_path / "b", 8, 2, recipe)],
        "2x4x2": launch_cmd("cpu_deepspeed_zero2.yaml", overrides(shards, tmp_path / "c", 4, 2, recipe)),
    }
    procs = {name: run(cmd) for name, cmd in runs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stdout[-2000:] + proc.stderr[-4000:])
    assert "global batch 16 = 4 per micro-batch x 2 accumulated x 2 ranks" in procs["2x4x2"].stdout
    ref = weights(tmp_path / "a" / "checkpoints" / "step_1")
    for name, folder in (("8x2", "b"), ("2x4x2", "c")):
        assert max_diff(ref, weights(tmp_path / folder / "checkpoints" / "step_1")) < 1e-5, (recipe, name)
        assert abs(metrics(tmp_path / folder)[1]["loss"] - metrics(tmp_path / "a")[1]["loss"]) < 1e-5
    assert metrics(tmp_path / "c")[1]["peak_memory_mb"] > 0


def test_accumulation_refuses_protoclip(shards, tmp_path):  # noqa: F811
    cmd = [
        str(BIN / "vlp-train"),
        *overrides(shards, tmp_path / "p", 8, 2, "clip"),
        "objective.terms={clip: 1.0, proto: 1.0}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "BatchNorm" in proc.stderr
