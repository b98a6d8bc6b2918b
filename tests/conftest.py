"""Shared fixtures: a small shapes world and open_clip's transforms and tokenizer."""

from __future__ import annotations

import io
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import open_clip
import pytest

from data_pipelines.shards.writer import ShardSink
from data_pipelines.sources.shapes import WorldConfig, generate_world

REPO = Path(__file__).resolve().parents[1]
# The workplace's shared folder (benchmark files that are not in the repository): $VLP_SHARED, or
# shared/ beside the checkout.
SHARED = Path(os.environ.get("VLP_SHARED") or REPO.parent / "shared")


@pytest.fixture(scope="session", autouse=True)
def shard_cache(tmp_path_factory) -> Path:
    """Copies of remote shards (and indexes of read-only ones) go to this session's folder, for the
    trainer's subprocesses too, not to the machine's shared cache."""
    folder = tmp_path_factory.mktemp("shard-cache")
    os.environ["VLP_SHARD_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def sugarcrepe() -> Path:
    """SugarCrepe's official JSON files (SHARED/benchmarks/sugarcrepe); the test is skipped without them."""
    folder = SHARED / "benchmarks" / "sugarcrepe"
    if not any(folder.glob("*.json")):
        pytest.skip(f"SugarCrepe's JSON files are not in {folder} (set VLP_SHARED to the folder holding benchmarks/)")
    return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """400 training samples in 8 shards of 50, plus small zero-shot and compositional sets."""
    out = tmp_path_factory.mktemp("world") / "shapes"
    cfg = WorldConfig(train_samples=400, shard_size=50, zeroshot_per_class=2, compositional_per_type=12)
    generate_world(out, cfg, workers=1, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> Path:
    """The trainer tests' shards: 400 samples in shards of 8 (2 ranks x 8 read the same samples per step
    as 1 rank x 16 whatever the shards: the data order is global). The world's zero-shot split sits
    beside them (``train_shards.parent``)."""
    out = tmp_path_factory.mktemp("trainworld") / "shapes"
    cfg = WorldConfig(train_samples=400, shard_size=8, zeroshot_per_class=1, compositional_per_type=1)
    generate_world(out, cfg, workers=1, log=lambda _: None)
    return out / "train"


@pytest.fixture(scope="session")
def preprocess():
    return open_clip.image_transform(32, is_train=False)


@pytest.fixture(scope="session")
def train_preprocess():
    return open_clip.image_transform(32, is_train=True)


@pytest.fixture(scope="session")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")


def png(colour=(200, 30, 30), size=8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(folder: Path, samples: list[dict], shard_size: int, pattern: str = "shard-{:06d}.tar") -> list[Path]:
    """Write ``samples`` (each {"__key__", member: bytes}) as shards; returns the shard paths."""
    with ShardSink(folder, pattern=pattern, shard_size=shard_size) as sink:
        for s in samples:
            sink.write(s["__key__"], {k: v for k, v in s.items() if k != "__key__"})
    return [folder / name for name in sink.sizes]


def simple_samples(n: int, prefix: str = "s") -> list[dict]:
    return [
        {"__key__": f"{prefix}{i:05d}", "png": png((i % 256, 0, 0)), "txt": f"caption {i}".encode()} for i in range(n)
    ]


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: raise if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the pipeline hangs")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """A randomly initialised tiny ViT CLIP, exported as an open_clip local dir (deterministic)."""
    import torch

    from vlp.config import ModelConfig
    from vlp.export import export_state
    from vlp.model import build_model

    torch.manual_seed(0)
    built = build_model(ModelConfig(name=str(REPO / "configs/models/vlp-tiny-vit.json")))
    out = tmp_path_factory.mktemp("export") / "model"
    export_state(built.model.state_dict(), built.open_clip_config, out)
    return out


def pytest_sessionfinish(session, exitstatus):
    """A child process still alive when the tests end (a DataLoader worker of an iterator nobody closed)
    would make the interpreter's exit wait on it: name it, end it, and fail the run instead of hanging."""
    import multiprocessing

    left = multiprocessing.active_children()
    if not left:
        return
    names = ", ".join(f"{p.name} (pid {p.pid})" for p in left)
    print(f"\nchild processes still alive when the tests ended: {names}; ending them", flush=True)
    for p in left:
        p.kill()
        p.join(5)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
