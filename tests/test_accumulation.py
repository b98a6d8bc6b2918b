"""Exact contrastive gradient accumulation: one optimizer step with (batch 16, k=1), (batch 8, k=2) and
(2 ranks x batch 4, k=2 under DeepSpeed ZeRO-2) gives the same weights, for clip, degla and negclip
with hard-negative images (so 2 ranks x B = 1 rank x 2B holds for those too; plain negclip is the last
one without the extra rows, which tests/test_objectives.py checks across ranks)."""

from __future__ import annotations

import pytest

from tests.runs import REPO, launch_cmd, max_diff, metrics, run, run_together, train_cmd, weights

pytestmark = pytest.mark.slow

RECIPES = {
    "clip": ["objective.terms={clip: 1.0}"],
    "degla": [
        "objective.terms={negclip: 1.0, tgc: 0.1, igc: 0.1, distill: 0.005}",
        "data.negatives=4",
        "objective.ema_decay=0.99",
    ],
    # NegCLIP with hard-negative images: the shapes world's twins join the batch as extra rows
    "negclip_twins": ["objective.terms={negclip: 1.0}", "data.negatives=4", "data.neighbours=true"],
}


def overrides(shards, out, batch: int, k: int, recipe: str) -> list[str]:
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
def test_accumulated_step_equals_the_large_batch(recipe, train_shards, tmp_path):
    runs = {
        "16x1": train_cmd(overrides(train_shards, tmp_path / "a", 16, 1, recipe)),
        "8x2": train_cmd(overrides(train_shards, tmp_path / "b", 8, 2, recipe)),
        "2x4x2": launch_cmd("cpu_deepspeed_zero2.yaml", overrides(train_shards, tmp_path / "c", 4, 2, recipe)),
    }
    procs = dict(zip(("16x1", "8x2"), run_together([runs["16x1"], runs["8x2"]]), strict=True))
    procs["2x4x2"] = run(runs["2x4x2"])
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stdout[-2000:] + proc.stderr[-4000:])
    assert "global batch 16 = 4 per micro-batch x 2 accumulated x 2 ranks" in procs["2x4x2"].stdout
    ref = weights(tmp_path / "a" / "checkpoints" / "step_1")
    for name, folder in (("8x2", "b"), ("2x4x2", "c")):
        assert max_diff(ref, weights(tmp_path / folder / "checkpoints" / "step_1")) < 1e-5, (recipe, name)
        assert abs(metrics(tmp_path / folder)[1]["loss"] - metrics(tmp_path / "a")[1]["loss"]) < 1e-5
    # peak_memory_mb is the largest rank's peak: at least the fp32 weights, their gradients and Adam's
    # two moments (4 copies of the tiny ViT's 13M parameters, about 200 MB) on top of the interpreter.
    parameters = sum(v.numel() for v in ref.values())
    assert metrics(tmp_path / "c")[1]["peak_memory_mb"] > 4 * 4 * parameters / 2**20


def test_accumulation_refuses_protoclip(train_shards, tmp_path):
    cmd = train_cmd([*overrides(train_shards, tmp_path / "p", 8, 2, "clip"), "objective.terms={clip: 1.0, proto: 1.0}"])
    proc = run(cmd)
    assert proc.returncode == 2 and "BatchNorm" in proc.stderr
    assert not (tmp_path / "p").exists()  # refused before anything was written
