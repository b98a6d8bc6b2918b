"""Loading only data, never code: checkpoints, exports and configs that a user may have received.

A crafted pickle (an object whose ``__reduce__`` creates a marker file) placed where the export
reads DeepSpeed's files or ``pytorch_model.bin`` is refused before anything in it runs, although
DeepSpeed itself loads its files with ``weights_only=False``; honest DeepSpeed checkpoints (real
ones, written by a one-process engine) still export and resume exactly; YAML is read with
``safe_load``; and no load in the packages unpickles full objects.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.runs import REPO, free_port
from vlp.checkpoint import (
    DS_TAG,
    UnsafeCheckpointError,
    checkpoint_state_dict,
    deepspeed_safe_globals,
    weights_only_loads,
)
from vlp.config.loading import load_config
from vlp.config.schema import ConfigError
from vlp.export import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint
from vlp.export import main as vlp_export
from vlp.study.spec import StudyError, load_study


class Payload:
    """Unpickled, it opens (creates) ``path``: what a malicious checkpoint could run instead."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(path: Path, blob: dict, marker: Path) -> None:
    """Rewrite a checkpoint file as ``blob`` plus the payload, keeping everything else a loader needs."""
    torch.save({**blob, "payload": Payload(marker)}, path)


def load_honest(path: Path) -> dict:
    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


# Run in a fresh process (DeepSpeed initialises torch.distributed): a one-process engine per ZeRO
# stage trains 3 steps and saves its checkpoint as accelerate lays it out (tag pytorch_model), then a
# new engine resumes it with every torch.load forced weights-only and must take the same next steps.
ENGINES = r"""
import json, sys
import torch, deepspeed
from safetensors.torch import save_file
from vlp.checkpoint import deepspeed_safe_globals, weights_only_loads
deepspeed.init_distributed(dist_backend="gloo", verbose=False)
root = sys.argv[1]

def engine(stage, seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    cfg = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage}, "steps_per_print": 10**9,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}}
    return deepspeed.initialize(model=m, model_parameters=m.parameters(), config=cfg)[0]

def step(e, i):
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(i))
    loss = e(x).pow(2).mean()
    e.backward(loss)
    e.step()
    return loss.item()

report = {}
for stage in (0, 2):
    e = engine(stage, 0)
    for i in range(3):
        step(e, i)
    out = f"{root}/zero{stage}"
    e.save_checkpoint(out, tag="pytorch_model")
    save_file({k: v.detach().clone() for k, v in e.module.state_dict().items()}, f"{out}/expected.safetensors")
    ahead = [step(e, i) for i in range(3, 6)]
    resumed = engine(stage, 1)
    with weights_only_loads(deepspeed_safe_globals()):
        resumed.load_checkpoint(out, tag="pytorch_model")
    report[stage] = {"ahead": ahead, "resumed": [step(resumed, i) for i in range(3, 6)]}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def deepspeed_checkpoints(tmp_path_factory) -> tuple[Path, dict]:
    """Real DeepSpeed checkpoints: ZeRO stage 0 (the module in mp_rank_00_model_states.pt) and ZeRO-2
    (fp32 partitions in zero_pp_rank_0_mp_rank_00_optim_states.pt), each as a vlp checkpoint folder."""
    root = tmp_path_factory.mktemp("deepspeed")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", ENGINES, str(root)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))[len("REPORT ") :])
    for stage in (0, 2):
        (root / f"zero{stage}" / CONFIG_NAME).write_text(json.dumps({"model_cfg": {}, "preprocess_cfg": {}}))
    return root, report


def copy_checkpoint(src: Path, dst: Path) -> Path:
    for f in src.rglob("*"):
        if f.is_file():
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / f.relative_to(src)).write_bytes(f.read_bytes())
    return dst


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: loaded as DeepSpeed loads its files (weights_only=False), the payload does run."""
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", {"module": {}}, marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_forced_weights_only_overrides_an_explicit_false_and_is_undone(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's setting: ignored inside, restored after
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", {"w": torch.ones(2)}, marker)
    before = torch.serialization.get_safe_globals()
    with weights_only_loads(deepspeed_safe_globals()):
        with pytest.raises(pickle.UnpicklingError, match="io.open"):
            torch.load(tmp_path / "evil.pt", weights_only=False)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert set(torch.serialization.get_safe_globals()) == set(before)  # torch keeps them as a set: no order


def test_honest_deepspeed_checkpoints_export_exactly_as_safetensors(deepspeed_checkpoints, tmp_path):
    root, _ = deepspeed_checkpoints
    for stage in (0, 2):
        ckpt = root / f"zero{stage}"
        expected = load_file(ckpt / "expected.safetensors")
        out = export_checkpoint(ckpt, tmp_path / f"export{stage}")
        assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])  # no pickle written
        got = load_file(out / WEIGHTS_NAME)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k].float()) for k in expected), stage


def test_deepspeed_engine_resumes_exactly_with_weights_only_loads(deepspeed_checkpoints):
    """What Checkpointer.load can opt into: DeepSpeed's engine.load_checkpoint under weights_only_loads."""
    _, report = deepspeed_checkpoints
    for stage, losses in report.items():
        assert losses["resumed"] == losses["ahead"], stage


@pytest.mark.parametrize(
    "stage, victim",
    [
        (0, "mp_rank_00_model_states.pt"),  # read by torch.load in vlp.export
        (2, "mp_rank_00_model_states.pt"),  # read by DeepSpeed's zero_to_fp32 (weights_only=False there)
        (2, "zero_pp_rank_0_mp_rank_00_optim_states.pt"),  # idem, the fp32 partitions
    ],
)
def test_a_planted_deepspeed_file_is_refused_before_it_runs(deepspeed_checkpoints, tmp_path, capsys, stage, victim):
    root, _ = deepspeed_checkpoints
    ckpt = copy_checkpoint(root / f"zero{stage}", tmp_path / "ckpt")
    path = ckpt / DS_TAG / victim
    marker = tmp_path / "ran"
    plant(path, load_honest(path), marker)
    named = "mp_rank_00_model_states.pt" if stage == 0 else f"a DeepSpeed file in {ckpt / DS_TAG}"
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load.*GLOBAL io\.open") as refusal:
        checkpoint_state_dict(ckpt)
    assert named in str(refusal.value)
    assert not marker.exists()
    # the command line says so and writes nothing
    assert vlp_export([str(ckpt), "--out", str(tmp_path / "export")]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_a_planted_pytorch_model_bin_is_refused_and_an_honest_one_exports(tmp_path):
    state = {"clip.logit_scale": torch.tensor([2.0]), "clip.proj": torch.randn(3, 2)}
    honest = tmp_path / "honest"
    honest.mkdir()
    torch.save(state, honest / "pytorch_model.bin")
    (honest / CONFIG_NAME).write_text(json.dumps({"model_cfg": {}, "preprocess_cfg": {}}))
    out = export_checkpoint(honest, tmp_path / "export")
    assert load_file(out / WEIGHTS_NAME).keys() == {"logit_scale", "proj"}

    evil = copy_checkpoint(honest, tmp_path / "evil")
    marker = tmp_path / "ran"
    plant(evil / "pytorch_model.bin", state, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin: refused to load"):
        checkpoint_state_dict(evil)
    assert not marker.exists()


def test_model_safetensors_checkpoints_export(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"clip.w": torch.ones(2, 2)}, ckpt / "model.safetensors")
    (ckpt / CONFIG_NAME).write_text(json.dumps({"model_cfg": {}, "preprocess_cfg": {}}))
    assert torch.equal(load_file(export_checkpoint(ckpt, tmp_path / "out") / WEIGHTS_NAME)["w"], torch.ones(2, 2))


PYTHON_TAG = '!!python/object/apply:builtins.open ["{marker}", "w"]'


def test_yaml_python_tags_are_refused_in_configs_overrides_and_studies(tmp_path):
    marker = tmp_path / "ran"
    tag = PYTHON_TAG.format(marker=marker)
    config = tmp_path / "run.yaml"
    config.write_text(f"train:\n  max_steps: {tag}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    with pytest.raises(ConfigError, match="cannot read value"):
        load_config(None, [f"train.max_steps={tag}"])
    study = tmp_path / "study.yaml"
    study.write_text(f"name: {tag}\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(study)
    assert not marker.exists()


# What the packages may call to read a file, and how. torch.jit.load (vlp/torchscript.py) is the one
# reader of TorchScript archives; it builds no arbitrary Python object, but runs TorchScript code.
PACKAGES = ("vlp", "data_pipelines", "eval_zeroshot")
ALLOWED_JIT = {"vlp/torchscript.py"}
PICKLERS = ("pickle", "dill", "cloudpickle", "joblib", "marshal", "_pickle")
YAML_UNSAFE = ("load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all")
OPEN_CLIP_LOADERS = ("create_model", "create_model_and_transforms", "create_model_from_pretrained", "load_checkpoint")


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_load_in_the_packages_unpickles_full_objects():
    problems = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call):
                    continue
                func = ast.unparse(node.func)
                head, _, last = func.rpartition(".")
                where = f"{rel}:{node.lineno} {func}"
                if func.endswith("torch.load") and not _is_true(_kw(node, "weights_only")):
                    problems.append(f"{where} without weights_only=True")
                elif head.rpartition(".")[2] in PICKLERS and last in ("load", "loads", "Unpickler"):
                    problems.append(f"{where}: unpickles")
                elif last == "read_pickle":
                    problems.append(f"{where}: unpickles")
                elif head.endswith("yaml") and last in YAML_UNSAFE:
                    problems.append(f"{where}: use yaml.safe_load")
                elif last == "load" and head.endswith(("np", "numpy")) and _is_true(_kw(node, "allow_pickle")):
                    problems.append(f"{where} with allow_pickle=True")
                elif func.endswith("jit.load") and rel not in ALLOWED_JIT:
                    problems.append(f"{where}: TorchScript runs code")
                elif head.endswith("open_clip") and last in OPEN_CLIP_LOADERS and _kw(node, "pretrained") is not None:
                    if not _is_true(_kw(node, "weights_only")):
                        problems.append(f"{where} loads weights without weights_only=True")
    assert not problems, "\n".join(problems)
