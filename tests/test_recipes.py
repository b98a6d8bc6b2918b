"""The recipes with state beyond the model (hard negatives from the loader, DeGLA's EMA teacher,
ProtoCLIP's heads, episodes and external teacher) run with 2 processes under DeepSpeed ZeRO-2 on the
shapes world and learn; the teacher and the episodes survive an exact resume. The stateless recipes
are covered elsewhere: CLIP is the demo's objective (tests/test_train.py's ZeRO-2 run), DCL runs end to
end in the tiny study (tests/test_study.py), and both match across ranks in tests/test_objectives.py."""

from __future__ import annotations

import json

import pytest

from data_pipelines.sources.shapes import WorldConfig, generate_world
from tests.runs import REPO, launch_cmd, metrics, run

pytestmark = pytest.mark.slow
STEPS = 16


@pytest.fixture(scope="module")
def recipe_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipeworld") / "shapes"
    generate_world(
        out,
        WorldConfig(train_samples=1200, shard_size=100, zeroshot_per_class=1, compositional_per_type=1),
        workers=1,
        log=lambda _: None,
    )
    return out / "train"


def overrides(recipe_shards, out, **extra) -> list[str]:
    base = {
        "output_dir": out,
        "data.shapes_world": "",
        "data.train": recipe_shards,
        "data.workers": 0,
        "model.name": REPO / "configs/models/vlp-tiny.json",  # recipes fine-tuning the demo export start fresh
        "train.max_steps": STEPS,
        "train.batch_size": 16,
        "train.lr": 2e-3,
        "train.warmup_steps": 2,
        "train.precision": "fp32",
        "train.log_every": 1,
        "train.save_every": 8,
        "train.keep_last": 5,
        "train.threads": 1,
        "objective.proto.episode_steps": 5,
        "objective.proto.clusters": 4,
        "objective.proto.hidden": 64,
        "eval.zeroshot": "[]",  # the recipes name data/shapes; this test's world is elsewhere
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def mean(xs):
    return sum(xs) / len(xs)


EXTERNAL = "objective.terms={clip: 1.0, proto: 1.0, proto_external: 0.5}"


@pytest.fixture(scope="module")
def full_run(recipe_shards, tmp_path_factory):
    """Each recipe's whole run under ZeRO-2, made once: the learning test reads it, the resume test
    compares a resumed run with it."""
    done = {}

    def get(recipe: str):
        if recipe not in done:
            out = tmp_path_factory.mktemp(recipe) / "full"
            # ProtoCLIP's run also clusters with its external teacher (the packaged sentence embedder)
            extra = [EXTERNAL] if recipe == "protoclip" else []
            cmd = launch_cmd(
                "cpu_deepspeed_zero2.yaml",
                ["--config", str(REPO / f"configs/{recipe}.yaml"), *overrides(recipe_shards, out), *extra],
            )
            done[recipe] = (out, run(cmd))
        return done[recipe]

    return get


@pytest.mark.parametrize("recipe", ["negclip", "degla", "protoclip"])
def test_recipe_runs_under_zero2_and_learns(recipe, full_run):
    out, proc = full_run(recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    logged = metrics(out)
    assert sorted(logged) == list(range(1, STEPS + 1))
    terms = json.loads((out / "summary.json").read_text())["config"]["objective"]["terms"]
    for name in terms:
        assert all(name in r for r in logged.values()), name  # every term is logged
    # ProtoCLIP adds its term from the second episode on; judge the contrastive part there.
    key = "clip" if recipe == "protoclip" else "loss"
    series = [logged[s][key] for s in range(1, STEPS + 1)]
    assert mean(series[-4:]) < mean(series[:4]) - 0.05, series
    if recipe == "protoclip":
        assert all(logged[s]["proto"] == 0.0 for s in range(1, 6))  # the first episode is CLIP only
        assert all(logged[s]["proto"] > 0.0 for s in range(6, STEPS + 1))
    if recipe == "degla":
        # From step 2 the student has moved and the EMA teacher (decay 0.99) lags behind it: a teacher
        # that aliased the student, or features never filled in, would give exactly 0.
        assert all(logged[s]["distill"] > 0 and logged[s]["tgc"] > 0 for s in range(2, STEPS + 1))


@pytest.mark.parametrize("recipe,resume_at", [("degla", 8), ("protoclip", 8)])
def test_teacher_and_episodes_resume_exactly(recipe, resume_at, recipe_shards, full_run, tmp_path):
    resumed = tmp_path / "resumed"
    config = ["--config", str(REPO / f"configs/{recipe}.yaml"), *([EXTERNAL] if recipe == "protoclip" else [])]
    full, proc = full_run(recipe)
    assert proc.returncode == 0, proc.stderr[-5000:]
    ckpt = full / "checkpoints" / f"step_{resume_at}"
    if recipe == "degla":
        assert (ckpt / "teacher.safetensors").is_file()
    else:
        assert (ckpt / "proto_rank0.pt").is_file() and (ckpt / "proto_rank1.pt").is_file()
    proc = run(
        launch_cmd("cpu_deepspeed_zero2.yaml", [*config, *overrides(recipe_shards, resumed), f"train.resume={ckpt}"])
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    a, b = metrics(full), metrics(resumed)
    assert sorted(b) == list(range(resume_at + 1, STEPS + 1))
    for step in b:
        for key in ("loss", *json.loads((full / "summary.json").read_text())["config"]["objective"]["terms"]):
            assert abs(a[step][key] - b[step][key]) <= 1e-5, (step, key, a[step][key], b[step][key])


def test_protoclip_external_teacher(full_run):
    """ProtoCLIP's full run clusters the captions with the packaged sentence embedder too (no download)."""
    out, proc = full_run("protoclip")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    logged = metrics(out)
    assert all(logged[s]["proto_external"] == 0.0 for s in range(1, 6))
    assert all(logged[s]["proto_external"] > 0.0 for s in range(6, STEPS + 1))
    import torch

    episode = torch.load(out / "checkpoints" / f"step_{STEPS}" / "proto_rank0.pt", weights_only=True)
    assert episode["labels"].shape[1] == 3 and episode["image_from_external"].shape == (4, 128)


def test_sentence_teacher_is_offline_and_semantic():
    from vlp.protoclip.teacher import SentenceTeacher

    emb = SentenceTeacher()(["a red circle", "a red round shape", "a blue square"])
    assert emb.shape == (3, 384)
    assert (emb[0] @ emb[1]) > (emb[0] @ emb[2])
