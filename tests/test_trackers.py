"""log.trackers: one short run logging to TensorBoard, wandb (offline) and mlflow (a local file store) at
once, each read back with its own tools and compared with metrics.jsonl and eval.jsonl; and the config
errors for an unknown tracker or a missing package. No network: wandb runs offline, mlflow on files."""

from __future__ import annotations

import json
import math
import os
import struct
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import yaml

from tests.runs import REPO, metrics, run, train_cmd
from vlp.trackers import EVAL_TABLE, flat_config, known_trackers, mlflow_name

MAX_STEPS = 3
PROJECT = "vlp-trackers-test"


@pytest.fixture(scope="module")
def tracked(train_shards, tmp_path_factory) -> dict:
    """One run with log.trackers=[tensorboard, wandb, mlflow], evaluated at steps 2 and 3."""
    root = tmp_path_factory.mktemp("trackers")
    out, store = root / "run", root / "mlruns"
    # the caller's own wandb/mlflow settings (an API key, MLFLOW_EXPERIMENT_NAME) stay out of the test
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env |= {
        # wandb: offline, quiet, no git/code/system probes, and its settings and caches under the test folder
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
        "WANDB_CONFIG_DIR": str(root / "wandb-home"),
        "WANDB_CACHE_DIR": str(root / "wandb-home"),
        "WANDB_DATA_DIR": str(root / "wandb-home"),
        # mlflow: a local file store (mlflow 3 keeps it behind this switch; older versions ignore it)
        "MLFLOW_TRACKING_URI": store.as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    zeroshot = train_shards.parent / "zeroshot"
    # where wandb and mlflow would write by default (the working directory is the repository)
    strays = [REPO / "wandb", REPO / "mlruns", REPO / "mlflow.db"]
    before = {p for p in strays if p.exists()}
    overrides = [
        f"output_dir={out}",
        f"data.train={train_shards}",
        "data.workers=0",
        "data.shuffle_buffer=0",
        "train.batch_size=8",
        f"train.max_steps={MAX_STEPS}",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.threads=1",
        f"eval.zeroshot=[{zeroshot}:test]",
        "eval.every=2",
        "eval.batch_size=32",
        "log.trackers=[tensorboard, wandb, mlflow]",
        f"log.project={PROJECT}",
    ]
    proc = run(train_cmd(overrides), timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    after = {p for p in strays if p.exists()}
    return {"out": out, "store": store.as_uri(), "output": proc.stdout + proc.stderr, "strays": after - before}


def _expected(out: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value, as metrics.jsonl and eval.jsonl hold them."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for step, record in metrics(out).items():
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                series[f"train/{key}"][step] = value
    for line in (out / "eval.jsonl").read_text().splitlines():
        logged = json.loads(line)
        for result in logged["results"]:
            for name, value in result["metrics"].items():
                series[f"eval/{result['dataset']}/{name}"][logged["step"]] = value
    return dict(series)


def _eval_rows(out: Path) -> dict[tuple[int, str], dict[str, float]]:
    rows = {}
    for line in (out / "eval.jsonl").read_text().splitlines():
        logged = json.loads(line)
        for result in logged["results"]:
            rows[logged["step"], result["dataset"]] = result["metrics"]
    return rows


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b


def _assert_same_series(got: dict[str, dict[int, float]], expected: dict[str, dict[int, float]], exact=_same):
    assert set(got) == set(expected)
    for tag, values in expected.items():
        assert set(got[tag]) == set(values), tag
        assert all(exact(got[tag][s], v) for s, v in values.items()), (tag, got[tag], values)


def _config(out: Path) -> dict:
    return flat_config(yaml.safe_load((out / "config.yaml").read_text()))


def _check_table(columns: list[str], data: list[list], out: Path, tolerance: float) -> None:
    """A tracker's evaluation table holds one row per (step, set) of eval.jsonl, with its metrics."""
    expected = _eval_rows(out)
    assert columns[:5] == ["step", "dataset", "split", "task", "n"]
    got = {(row[0], row[1]): dict(zip(columns[5:], row[5:], strict=True)) for row in data}
    assert set(got) == set(expected) == {(2, "zeroshot:test"), (3, "zeroshot:test")}
    for key, values in expected.items():
        for name, value in values.items():
            cell = got[key][name]
            assert (cell is None) if math.isnan(value) else cell == pytest.approx(value, abs=tolerance), (key, name)


@pytest.mark.slow
def test_the_logged_scalars_are_complete(tracked):
    expected = _expected(tracked["out"])
    assert sorted(metrics(tracked["out"])) == list(range(1, MAX_STEPS + 1))
    assert {"train/loss", "train/lr", "train/logit_scale", "eval/zeroshot:test/acc1"} <= set(expected)
    assert set(expected["eval/zeroshot:test/acc1"]) == {2, 3}


@pytest.mark.slow
def test_tensorboard_holds_the_same_scalars_in_output_tensorboard(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tracked["out"]
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    got = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    # TensorBoard keeps float32
    _assert_same_series(got, _expected(out), exact=lambda a, b: _same(float(np.float32(a)), float(np.float32(b))))
    # the configuration as hyper-parameters (accelerate writes them beside the scalars)
    (hparams,) = (out / "tensorboard").glob("*/hparams.yml")
    assert yaml.safe_load(hparams.read_text()) == _config(out)


def _wandb_records(path: Path):
    """The records of a .wandb file (wandb's LevelDB-style log of its protobuf ``Record``s): wandb 0.19+
    reads them in its Go core only, so the test reads the framing itself and parses with wandb's protos."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:header])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending = header, b""
    while pos + header <= len(data):
        if block - pos % block < header:  # the rest of a block too short for a record header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if length == 0 and kind == 0:
            break
        pending += data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.slow
def test_wandb_offline_run_holds_the_same_scalars_config_and_table(tracked):
    out = tracked["out"]
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    history: dict[str, dict[int, float]] = defaultdict(dict)
    tables: dict[int, dict] = defaultdict(dict)
    config, name, project = {}, None, None
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name, project = record.run.display_name, record.run.project
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update if u.key})
        elif kind == "history":
            step = record.history.step.num
            for item in record.history.item:
                keys = list(item.nested_key) or [item.key]
                if keys[0] == EVAL_TABLE:
                    tables[step][keys[1]] = json.loads(item.value_json)
                elif not keys[0].startswith("_"):
                    history[keys[0]][step] = json.loads(item.value_json)
    assert (name, project) == ("run", PROJECT)
    _assert_same_series(dict(history), _expected(out))  # exact: wandb keeps doubles
    config.pop("_wandb", None)
    assert config == _config(out)
    assert sorted(tables) == [2, 3] and all(t["_type"] == "table-file" for t in tables.values())
    rows: list[list] = []
    for step in (2, 3):
        table = json.loads((run_dir / "files" / tables[step]["path"]).read_text())
        rows += table["data"]
    _check_table(table["columns"], rows, out, tolerance=0)


@pytest.mark.slow
def test_mlflow_file_store_holds_the_same_metrics_params_and_table(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tracked["out"]
    client = MlflowClient(tracking_uri=tracked["store"])
    experiment = client.get_experiment_by_name(PROJECT)
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "run" and mlrun.info.status == "FINISHED"
    assert mlrun.data.params == {k: str(v) for k, v in _config(out).items()}
    expected = _expected(out)
    got = {
        tag: {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, mlflow_name(tag))}
        for tag in expected
    }
    assert set(mlrun.data.metrics) == {mlflow_name(tag) for tag in expected}
    _assert_same_series(got, expected)
    # mlflow's table: one JSON artifact that each evaluation appended to (pandas writes 10 digits)
    artifacts = Path(urlparse(mlrun.info.artifact_uri).path)
    table = json.loads((artifacts / f"{EVAL_TABLE}.json").read_text())
    _check_table(table["columns"], table["data"], out, tolerance=1e-9)
    assert json.loads(mlrun.data.tags["mlflow.loggedArtifacts"]) == [{"path": f"{EVAL_TABLE}.json", "type": "table"}]


@pytest.mark.slow
def test_trackers_keep_their_files_in_output_dir(tracked):
    out = tracked["out"]
    assert not tracked["strays"]
    assert "Downloading artifacts" not in tracked["output"]
    assert (out / "tensorboard").is_dir() and not (out / PROJECT).exists()


# ---------------------------------------------------------------- refused before anything is written


def test_an_unknown_tracker_or_a_missing_package_is_a_config_error(tmp_path, capsys, monkeypatch):
    import accelerate.utils.imports

    import vlp.trackers
    from vlp.train import main as vlp_train

    out = tmp_path / "run"
    base = [f"output_dir={out}", f"data.train={tmp_path}"]

    def refusal(trackers: str) -> str:
        assert vlp_train([*base, f"log.trackers={trackers}"]) == 2
        return capsys.readouterr().err

    known = ", ".join(known_trackers())
    assert {"tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive"} <= set(known_trackers())
    assert refusal("[tensorboard, wandbb]") == (
        f"vlp-train: error: log.trackers: unknown tracker 'wandbb' (did you mean 'wandb'?); "
        f"accelerate's trackers are {known}\n"
    )
    assert "log.trackers: unknown tracker 'all'" in refusal("[all]")
    # as if wandb were not installed (accelerate asks the same function)
    monkeypatch.setattr(accelerate.utils.imports, "is_wandb_available", lambda: False)
    assert refusal("[wandb]") == (
        "vlp-train: error: log.trackers: 'wandb' needs the wandb package: pip install 'vlp[wandb]'\n"
    )
    monkeypatch.setattr(accelerate.utils.imports, "is_aim_available", lambda: False)
    assert "log.trackers: 'aim' needs the aim package: pip install 'vlp[aim]'" in refusal("[aim]")
    # mlflow-skinny without pandas: mlflow's tables need it
    installed = vlp.trackers._module_installed
    monkeypatch.setattr(vlp.trackers, "_module_installed", lambda name: name != "pandas" and installed(name))
    assert "log.trackers: 'mlflow' needs the pandas package: pip install 'vlp[mlflow]'" in refusal("[mlflow]")
    assert not out.exists()


def test_names_and_config_as_trackers_take_them(tmp_path):
    from vlp.config import load_config
    from vlp.trackers import accelerate_trackers, project_name

    assert mlflow_name("eval/flickr:test/image_retrieval_recall@1") == "eval/flickr:test/image_retrieval_recall_at_1"
    assert mlflow_name("train/loss") == "train/loss"
    tree = {"a": {"b": 1, "c": None, "d": [1, 2], "e": {}, "f": {"g": 0.5}}, "h": "x", "i": True}
    flat = {"a.b": 1, "a.c": "null", "a.d": "[1, 2]", "a.e": "{}", "a.f.g": 0.5, "h": "x", "i": True}
    assert flat_config(tree) == flat
    cfg = load_config(None, ["data.train=x/", "log.trackers=[]"])
    assert cfg.log.trackers == [] and accelerate_trackers([], "p", tmp_path) == []
    assert load_config(None, ["data.train=x/"]).log.trackers == ["tensorboard"]
    assert project_name("", tmp_path / "runs" / "demo") == "demo" and project_name("mine", tmp_path) == "mine"
    (tensorboard,) = accelerate_trackers(["tensorboard", "tensorboard"], "p", tmp_path / "out")
    assert tensorboard.name == "tensorboard" and tensorboard.run_name == "tensorboard"  # -> OUTPUT/tensorboard
