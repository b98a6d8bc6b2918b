"""The recipes with state beyond the model (hard negatives from the loader, DeGLA's EMA teacher,
ProtoCLIP's heads, episodes and external teacher) run with 2 processes under DeepSpeed ZeRO-2 on the
shapes world and learn; the teacher and the episodes survive an exact resume. The stateless recipes
are covered elsewhere: CLIP is the demo's objective (tests/test_train.py's ZeRO-2 run), DCL runs end to
end in the tiny study (tests/test_study.py), and both match across ranks in tests/test_objectives.py.

Every recipe's header gives the command that runs it (issue 25): each header command runs, as written, on
a fresh clone (a folder holding only configs/ and launch/) for two steps, with only size, step and path
overrides appended, and makes what it says (the shapes world, runs/NAME with its export); `make scale`
runs them all. `make test` runs the demo's one-process smoke command (docs/training.md) on a fresh clone:
the zero-shot sets it names lie in the shapes world the run generates."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from data_pipelines.sources.shapes import WorldConfig, generate_world
from tests.runs import BIN, REPO, free_port, launch_cmd, metrics, run
from vlp.config import ConfigError, generated_eval_sets, load_config

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


# ------------------------------------------------------------------------------------------------------
# Every recipe's header command, as written, on a fresh clone.

RECIPES = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
# A command line of a header, indented under the prose: "#   vlp-train --config ...", "#   accelerate launch ..."
# (a prose line starts one space after the "#", and may begin with a program's name).
COMMAND = re.compile(r"^#\s{2,}((?:accelerate launch|vlp-[a-z]+) .*)$")
# The tests run on the CPU: a GPU launch config is replaced by its CPU twin (the same ZeRO stage).
CPU_TWIN = {
    "gpu_zero2.yaml": "cpu_deepspeed_zero2.yaml",
    "gpu_zero3.yaml": "cpu_deepspeed_zero3.yaml",
    "gpu_ddp.yaml": "cpu_ddp.yaml",
}
# Appended to every training command: two steps of a small batch on a small world.
SMALL = ["train.max_steps=2", "train.batch_size=8", "data.shapes_train_samples=64"]
# The published-scale recipes read a checkpoint and shards this machine does not have: the tiny model, no
# pretrained weights, the (fresh clone's) shapes world's shards, which carry negatives and twins.
STAND_INS = {
    "degla_vitb32": [
        "model.name=configs/models/vlp-tiny.json",
        "model.pretrained=",
        "data.train=data/shapes/train",
        "data.workers=1",
    ],
    "negclip_vitb32": [
        "model.name=configs/models/vlp-tiny.json",
        "model.pretrained=",
        "data.train=data/shapes/train",
        "data.workers=1",
    ],
    "protoclip_rn50_cc3m": [
        "model.name=configs/models/vlp-tiny.json",
        "data.train=data/shapes/train",
        "data.workers=1",
    ],
}


def header_commands(recipe: str) -> list[list[str]]:
    """The command lines of the recipe's header comment (the comment lines before its first key)."""
    commands = []
    for line in (REPO / "configs" / f"{recipe}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        found = COMMAND.match(line)
        if found:
            commands.append(shlex.split(found.group(1)))
    return commands


def is_training(argv: list[str]) -> bool:
    return argv[0] == "vlp-train" or (argv[0] == "accelerate" and "vlp.train" in argv)


def runnable(argv: list[str], overrides: list[str]) -> list[str]:
    """The header's command with this venv's programs; a launch gets a free port (tests run side by side)
    and, without a GPU, the CPU twin of a GPU launch config; a training command gets ``overrides``."""
    argv = list(argv)
    if argv[0] == "accelerate":
        at = argv.index("--config_file") + 1
        config = Path(argv[at])
        if config.name in CPU_TWIN:
            argv[at] = str(config.with_name(CPU_TWIN[config.name]))
        argv[2:2] = ["--main_process_port", str(free_port())]
    return [str(BIN / argv[0]), *argv[1:], *(overrides if is_training(argv) else [])]


def fresh_clone(folder: Path) -> Path:
    """What a fresh clone gives a recipe: configs/ and launch/ (nothing generated: no data/, no runs/)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "launch"):
        (folder / name).symlink_to(REPO / name)
    return folder


def run_in(folder: Path, cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout)


def output_dir(recipe: str) -> str:
    found = re.search(r"^output_dir: (\S+)", (REPO / "configs" / f"{recipe}.yaml").read_text(), re.M)
    return found.group(1)


def test_every_recipe_header_gives_its_command():
    for recipe in RECIPES:
        commands = header_commands(recipe)
        training = [c for c in commands if is_training(c)]
        assert len(training) == 1, (recipe, commands)
        cmd = training[0]
        assert cmd[cmd.index("--config") + 1] == f"configs/{recipe}.yaml", cmd
        if cmd[0] == "accelerate":
            assert (REPO / cmd[cmd.index("--config_file") + 1]).is_file(), cmd


def test_eval_sets_in_a_world_the_run_generates(tmp_path, monkeypatch):
    """The recipes' zero-shot sets lie in data/shapes, which the run generates when missing: accepted
    while the world is missing (read once it is written); a set the world will not hold is refused
    naming the world's sets; one outside the world is left to the reader ("does not exist")."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert generated_eval_sets(cfg) == ["data/shapes/zeroshot:test", "data/shapes/zeroshot:heldout"]
    for wrong in ("data/shapes/zeroshoot:test", "data/shapes/zeroshot:val", "data/shapes/compositional"):
        with pytest.raises(ConfigError, match="none of its zero-shot sets: data/shapes/zeroshot:test"):
            load_config(REPO / "configs" / "demo.yaml", [f"eval.zeroshot=[{wrong}]"])
    assert generated_eval_sets(load_config(REPO / "configs" / "demo.yaml", ["eval.zeroshot=[elsewhere/z]"])) == []
    (tmp_path / "data" / "shapes").mkdir(parents=True)
    (tmp_path / "data" / "shapes" / "shapes_world.json").write_text("{}")  # a world is there: read as it is
    assert generated_eval_sets(cfg) == []


def test_world_generation_ends_its_workers_under_the_trainers_signal_handler():
    """The trainer installs its StopSignal (SIGTERM = save at the next step) before it generates a missing
    shapes world in a pool of forked workers: the pool must still end them (it hung, now and then, in
    the demo's header command)."""
    code = (
        "from vlp.train.stopping import StopSignal\n"
        "from data_pipelines.workers import map_in_pool\n"
        "StopSignal()\n"
        "for _ in range(50):\n"
        "    assert list(map_in_pool(abs, range(-300, 0), 2, chunksize=64)) == list(range(300, 0, -1))\n"
    )
    proc = subprocess.run([str(BIN / "python"), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def check_training_run(folder: Path, out: str, proc: subprocess.CompletedProcess, steps: int = 2) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = folder / out
    assert sorted(metrics(run_dir)) == list(range(1, steps + 1))
    assert (run_dir / "export").is_dir() and (run_dir / "summary.json").is_file()


def test_demo_smoke_command_on_a_fresh_clone(tmp_path):
    """`vlp-train --config configs/demo.yaml` (the one-process smoke test of docs/training.md) on a fresh
    clone generates the shapes world and evaluates on the zero-shot sets inside it."""
    folder = fresh_clone(tmp_path / "clone")
    cmd = runnable(["vlp-train", "--config", "configs/demo.yaml"], [*SMALL, "train.max_steps=1"])
    proc = run_in(folder, cmd)
    check_training_run(folder, "runs/demo", proc, steps=1)
    assert (folder / "data" / "shapes" / "shapes_world.json").is_file()
    evals = [json.loads(line) for line in (folder / "runs" / "demo" / "eval.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in evals[-1]["results"]} == {"zeroshot:test", "zeroshot:heldout"}, evals


@pytest.fixture(scope="module")
def clone_with_demo(tmp_path_factory):
    """A fresh clone in which the demo's header command has run (what the fine-tuning recipes' headers
    ask for first): the shapes world in data/shapes, the export in runs/demo/export."""
    folder = fresh_clone(tmp_path_factory.mktemp("fresh") / "clone")
    (demo,) = header_commands("demo")
    proc = run_in(folder, runnable(demo, SMALL))
    (folder / "demo.log").write_text(proc.stdout + proc.stderr)  # kept with a failed test's folder
    return folder, proc


@pytest.mark.scale
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_header_commands_run(recipe, clone_with_demo):
    folder, demo = clone_with_demo
    if recipe == "demo":
        check_training_run(folder, "runs/demo", demo)
        assert (folder / "data" / "shapes" / "shapes_world.json").is_file()  # generated by the run
        return
    assert demo.returncode == 0, "the demo's header command failed:\n" + demo.stdout[-2000:] + demo.stderr[-4000:]
    for argv in header_commands(recipe):
        proc = run_in(folder, runnable(argv, [*SMALL, *STAND_INS.get(recipe, [])]))
        if is_training(argv):
            check_training_run(folder, output_dir(recipe), proc)
        else:
            assert proc.returncode == 0, (argv, proc.stdout[-3000:] + proc.stderr[-5000:])
