"""The trainer's parts on their own: the EMA teacher's update, checkpoint pruning, the stateful
parts' round trip, the term registry that config and trainer consult, and the test hook seam."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.runs import REPO, run, run_together, train_cmd
from vlp.checkpoint import list_checkpoints, prune_checkpoints, read_trainer_state
from vlp.config import ConfigError, load_config
from vlp.ema import EMATeacher
from vlp.objectives import TERMS, Features, Objective
from vlp.objectives.registry import HEADS, NEGATIVES, TEACHER, needs_teacher, register_term, terms_needing
from vlp.train.checkpointer import Counters, LoaderPosition
from vlp.train.errors import TrainingError
from vlp.train.fault_seams import ENV, TrainHooks, load_hooks


def test_ema_teacher_update_by_hand():
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = EMATeacher(student, decay=0.9)
    assert not teacher.module[0].training and not any(p.requires_grad for p in teacher.module.parameters())
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student(torch.randn(4, 2))  # train mode: BatchNorm's running statistics move
    teacher.update(student)
    after, now = teacher.module.state_dict(), student.state_dict()
    for name, _ in student.named_parameters():
        # θ* ← 0.9·θ* + 0.1·θ, with θ = θ*_before + 1
        assert torch.allclose(after[name], before[name] + 0.1, atol=1e-6), name
    assert torch.equal(after["1.running_mean"], now["1.running_mean"])  # buffers follow the student
    restored = EMATeacher(student, decay=0.9)
    restored.load_state_dict(teacher.state_dict())
    assert all(torch.equal(restored.module.state_dict()[k], v) for k, v in after.items())
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(student, decay=1.0)


def test_pruning_keeps_the_newest_complete_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 10, 4, 6):
        (root / f"step_{step}").mkdir(parents=True)
        (root / f"step_{step}" / "trainer_state.json").write_text("{}")
    (root / "step_12.partial").mkdir()  # an unfinished save is not a checkpoint
    (root / "step_8").mkdir()  # no trainer state: incomplete
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step_2", "step_4"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 10]
    assert (root / "step_12.partial").is_dir() and (root / "step_8").is_dir()


def test_counters_and_loader_position_round_trip(tmp_path):
    Counters(step=7, skipped_steps=2, samples=112, shape={"world_size": 2, "batch_size": 8}).save(tmp_path)
    back = Counters()
    back.load(tmp_path)
    assert (back.step, back.skipped_steps, back.samples) == (7, 2, 112)
    saved = {"step": 7, "skipped_steps": 2, "samples": 112, "world_size": 2, "batch_size": 8}
    assert read_trainer_state(tmp_path) == saved
    Counters(step=9, is_main=False).save(tmp_path)  # only the main process writes the counters
    back.load(tmp_path)
    assert back.step == 7

    class Loader:
        def __init__(self, state):
            self.state = state

        def state_dict(self):
            return self.state

        def load_state_dict(self, state):
            self.state = state

    LoaderPosition(Loader({"epoch": 1, "position": 48}), is_main=False).save(tmp_path)
    assert not (tmp_path / "loader.json").is_file()  # one position for all ranks: the main process writes it
    LoaderPosition(Loader({"epoch": 1, "position": 48}), is_main=True).save(tmp_path)
    fresh = Loader(None)
    LoaderPosition(fresh, is_main=False).load(tmp_path)
    assert fresh.state == {"epoch": 1, "position": 48}


def test_the_registry_answers_what_terms_need():
    assert set(TERMS) == {"clip", "dcl", "negclip", "igc", "tgc", "distill", "proto", "proto_external"}
    assert terms_needing(["clip", "igc", "tgc", "proto"], NEGATIVES) == ["igc", "tgc"]
    assert terms_needing(["clip", "proto_external"], HEADS) == ["proto_external"]
    assert needs_teacher(["negclip", "distill"]) and not needs_teacher(["negclip", "igc"])
    assert TEACHER in TERMS["tgc"].needs and TERMS["igc"].scope == "local" and TERMS["negclip"].scope == "global"
    with pytest.raises(ValueError, match="registered twice"):
        register_term("clip")(lambda x: x.f.image.sum())
    # config validation consults the registry: a term that needs negatives without them is refused
    with pytest.raises(ConfigError, match="objective.terms.igc: needs hard negatives"):
        load_config(None, ["data.train=x/", "objective.terms={clip: 1.0, igc: 0.1}"])


def test_a_new_term_is_one_function_and_one_registration():
    @register_term("test_alignment", scope="local")
    def alignment(x):
        """Mean squared distance of each pair (a toy term)."""
        return ((x.f.image - x.f.text) ** 2).sum(-1).mean()

    try:
        image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        out = Objective({"clip": 1.0, "test_alignment": 0.5})(Features(image, text, torch.tensor(10.0)))
        expected = ((image - text) ** 2).sum(-1).mean()
        assert out["test_alignment"].item() == pytest.approx(expected.item())
        assert out["loss"].item() == pytest.approx((out["clip"] + 0.5 * expected).item())
        assert load_config(None, ["data.train=x/", "objective.terms={test_alignment: 1.0}"])
    finally:
        del TERMS["test_alignment"]


def test_hooks_default_to_nothing_and_a_bad_name_is_one_clear_error(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    hooks = load_hooks()
    assert type(hooks) is TrainHooks and hooks.loss(1, torch.tensor(2.0)).item() == 2.0
    monkeypatch.setenv(ENV, "tests.fault_hooks:Faults")
    assert type(load_hooks()).__name__ == "Faults"
    monkeypatch.setenv(ENV, "tests.fault_hooks:Nope")
    with pytest.raises(TrainingError, match="cannot load the hooks"):
        load_hooks()


def test_refusals_come_before_anything_is_written(train_shards, tmp_path):
    """A bad evaluation set or bad test hooks stop the run with exit 1 and one message, before the
    output folder exists; a checkpoint path that is not one is a config error (exit 2)."""
    out = tmp_path / "run"
    base = [f"output_dir={out}", f"data.train={train_shards}", "data.workers=0", "train.threads=1"]
    bad_eval, bad_hooks, bad_resume = run_together(
        [
            train_cmd([*base, f"eval.zeroshot=[{tmp_path / 'nowhere'}]"]),
            train_cmd(base),
            train_cmd([*base, f"train.resume={tmp_path}"]),
        ],
        envs=[None, {**os.environ, ENV: "no_such_module:Hooks"}, None],
    )
    assert bad_eval.returncode == 1 and "vlp-train: error: eval.zeroshot:" in bad_eval.stderr, bad_eval.stderr[-2000:]
    assert bad_hooks.returncode == 1 and "cannot load the hooks" in bad_hooks.stderr, bad_hooks.stderr[-2000:]
    assert bad_resume.returncode == 2 and "is not a vlp checkpoint" in bad_resume.stderr, bad_resume.stderr[-2000:]
    assert not out.exists()


def test_a_teacher_equal_to_the_student_gives_distill_zero_and_tgc_its_floor():
    """With BatchNorm in the tower (the ResNet of configs/models/vlp-tiny.json) the teacher must
    normalise as the student does in training; in eval mode it would use running statistics and
    disagree with itself-as-student at step 0."""
    from vlp.config import ModelConfig
    from vlp.model import DualEncoder, build_model
    from vlp.objectives import distill_loss, tgc_loss

    torch.manual_seed(0)
    built = build_model(ModelConfig(name=str(REPO / "configs/models/vlp-tiny.json")))
    student = DualEncoder(built.model).train()
    teacher = EMATeacher(student, decay=0.99)
    running = teacher.module.clip.visual.bn1.running_mean.clone()
    images = torch.randn(6, 3, 64, 64)
    texts = built.tokenizer([f"a red circle {i}" for i in range(6)] + [f"a blue square {i}" for i in range(6)])
    out, t = student(image=images, text=texts), teacher(image=images, text=texts)
    assert torch.allclose(out["image_features"], t["image_features"], atol=1e-5)
    assert torch.equal(teacher.module.clip.visual.bn1.running_mean, running)  # the teacher's forward moves nothing
    text, neg = out["text_features"][:6], out["text_features"][6:, None]
    assert distill_loss([out["image_features"], text], [t["image_features"], t["text_features"][:6]]) < 1e-8
    floor = tgc_loss(text, text, neg)  # the caption is its own teacher
    assert tgc_loss(text, t["text_features"][:6], neg).item() == pytest.approx(floor.item(), abs=1e-5)


def test_neighbours_without_neighbours_in_the_shards_fail_fast_with_one_message(tmp_path):
    from data_pipelines.sources.shapes import WorldConfig, generate_world

    world = tmp_path / "plain"
    cfg = WorldConfig(train_samples=40, shard_size=20, zeroshot_per_class=1, compositional_per_type=1, twins=False)
    generate_world(world, cfg, workers=1, log=lambda _: None)
    overrides = [f"output_dir={tmp_path / 'run'}", f"data.train={world / 'train'}", "data.workers=0"]
    overrides += ["train.batch_size=8", "objective.terms={negclip: 1.0}", "data.negatives=2", "data.neighbours=true"]
    proc = run(train_cmd(overrides), timeout=240)
    assert proc.returncode == 1 and "missing_neighbour" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_data_bound_watch_warns_once_per_period_with_the_measured_rates():
    from vlp.train.throughput import EVERY, WARMUP, DataBoundWatch

    watch = DataBoundWatch(share=0.1, workers=1, images_per_step=64)
    lines = [watch.check(step, 0.01, 0.5, 900.0) for step in range(1, 200)]
    assert not any(lines)  # 2% waiting: compute-bound
    lines = {step: watch.check(step, 0.3, 0.5, 150.0) for step in range(200, 200 + EVERY + 40)}
    warned = [step for step, line in lines.items() if line]
    assert len(warned) == 2 and warned[1] - warned[0] == EVERY  # once per period
    line = lines[warned[0]]
    assert line.startswith(f"step {warned[0]}: data-bound: waiting for batches took")
    assert "data.workers=1; one loader core makes 150 images/s, the step takes 128/s" in line
    fresh = DataBoundWatch(share=0.1, workers=0, images_per_step=8)
    assert not any(fresh.check(s, 1.0, 1.0, None) for s in range(1, WARMUP + 1))  # start-up is not judged


def test_a_resume_that_would_change_the_data_order_is_refused_naming_the_key(train_shards, tmp_path):
    """train.seed, data.mode, data.shuffle_buffer and the shard list decide the global order: another
    value is refused (before anything is written: resolve_resume runs first); the job's shape is not."""
    from data_pipelines.loader import StreamingLoader
    from vlp.config import load_config
    from vlp.train.resume import refuse_another_data_order

    ckpt = tmp_path / "step_4"
    ckpt.mkdir()
    saved = StreamingLoader(str(train_shards), preprocess=lambda x: x, tokenizer=lambda x: x, batch_size=8, seed=3)
    (ckpt / "loader.json").write_text(json.dumps(saved.state_dict()))

    def cfg(*overrides):
        base = [
            f"output_dir={tmp_path / 'out'}",
            f"data.train={train_shards}",
            "train.seed=3",
            "data.shuffle_buffer=1000",
        ]
        return load_config(None, [*base, *overrides])

    refuse_another_data_order(cfg("train.batch_size=16", "data.workers=4", "train.accum_steps=2"), ckpt)
    fewer = tmp_path / "fewer"  # the same shards, one left out
    fewer.mkdir()
    for shard in sorted(train_shards.glob("*.tar"))[:-1]:
        (fewer / shard.name).symlink_to(shard)
    moved = tmp_path / "moved"  # all of them, somewhere else: the same data
    moved.mkdir()
    for shard in sorted(train_shards.glob("*.tar")):
        (moved / shard.name).symlink_to(shard)
    refuse_another_data_order(cfg(f"data.train={moved}"), ckpt)
    for override, key in [
        ("train.seed=4", "train.seed"),
        ("data.shuffle_buffer=10", "data.shuffle_buffer"),
        ("data.mode=resampled", "data.mode"),
        (f"data.train={fewer}", "data.train"),
    ]:
        with pytest.raises(TrainingError, match=f"{key} differs from the checkpoint's"):
            refuse_another_data_order(cfg(override), ckpt)
