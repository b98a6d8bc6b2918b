"""vlp-data neighbours: each sample's nearest other image, written into the shards beside everything else."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import torch

from data_pipelines.cli import main as vlp_data
from data_pipelines.loader import StreamingLoader
from data_pipelines.neighbours import nearest
from data_pipelines.sources.shapes import WorldConfig, generate_world
from tests.conftest import REPO, png, write_shards

TINY = str(REPO / "configs/models/vlp-tiny-vit.json")


def read(folder: Path) -> dict[str, dict[str, dict[str, bytes]]]:
    """shard name -> key -> member -> bytes."""
    out: dict[str, dict[str, dict[str, bytes]]] = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(tar.name, {}).setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small world without twins, plus a byte copy of one image, a broken image and a caption-less image."""
    root = tmp_path_factory.mktemp("nb")
    cfg = WorldConfig(train_samples=60, shard_size=20, zeroshot_per_class=1, compositional_per_type=1, twins=False)
    generate_world(root / "w", cfg, workers=1, log=lambda _: None)
    samples = [{"__key__": k, **m} for shard in read(root / "w" / "train").values() for k, m in shard.items()]
    samples.append({"__key__": "copy", "png": samples[0]["png"], "txt": b"the same picture, captioned again"})
    samples.append({"__key__": "broken", "png": b"\x89PNG no", "txt": b"broken", "json": b'{"x": 1}'})
    samples.append({"__key__": "mute", "png": png((1, 2, 3), 64)})  # no caption: gets one, is never one
    write_shards(root / "in", samples, shard_size=21)
    return root / "in"


def test_nearest_excludes_itself_copies_and_non_candidates():
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [1, 0.3], [0, 1], [0.1, 1]]), dim=1)
    groups = torch.tensor([0, 0, 1, 2, 3])  # rows 0 and 1 are byte copies
    candidate = torch.tensor([True, True, True, True, False])  # row 4 has no caption
    index, sims = nearest(f, groups, candidate, chunk_elements=7)  # two rows per chunk
    assert index.tolist() == [2, 2, 1, 2, 3]
    assert torch.allclose(sims[3], f[3] @ f[2])
    index, _ = nearest(f[:1], groups[:1], candidate[:1])
    assert index.tolist() == [-1]  # nobody else


def test_neighbours_are_added_and_nothing_else_changes(source, tmp_path, capsys, preprocess, tokenizer):
    out = tmp_path / "out"
    argv = ["neighbours", str(source), "--out", str(out), "--model", TINY, "--batch-size", "16"]
    assert vlp_data(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 63 and summary["with_neighbour"] == 62 and summary["without_neighbour"] == 1
    assert -1 <= summary["min_similarity"] <= summary["mean_similarity"] <= 1
    assert summary["skipped"] == {"corrupt_image": 1}
    before, after = read(source), read(out)
    assert (out / "sizes.json").read_text() == (source / "sizes.json").read_text()
    assert {s: list(k) for s, k in after.items()} == {s: list(k) for s, k in before.items()}
    flat = {k: m for shard in before.values() for k, m in shard.items()}
    for shard, samples in after.items():
        for key, members in samples.items():
            old = before[shard][key]
            if key == "broken":
                assert members == old
                continue
            assert {m: v for m, v in members.items() if m not in ("json", "neighbour.png")} == {
                m: v for m, v in old.items() if m != "json"
            }
            record = json.loads(members["json"])
            nb = record.pop("neighbour")
            assert record == (json.loads(old["json"]) if "json" in old else {})
            other = flat[nb["key"]]
            assert nb["key"] not in (key, "mute", "broken")
            assert members["neighbour.png"] == other["png"] != old["png"]  # never itself, never a byte copy
            assert nb["caption"] == other["txt"].decode()
            assert nb["negatives"] == (json.loads(other["json"]).get("negatives", []) if "json" in other else [])
    ld = StreamingLoader(
        out, preprocess=preprocess, tokenizer=tokenizer, batch_size=8, epochs=1, drop_last=False, neighbours=True
    )
    # "mute" has no caption of its own, "broken" no neighbour (its image cannot be read): their positions
    # hold stand-ins, and neither of them comes out
    keys = [k for b in ld for k in b["key"]]
    assert len(keys) == 63 and not {"mute", "broken"} & set(keys)
    assert set(ld.skipped) == {"missing_caption", "missing_neighbour"}
    again = tmp_path / "again"
    assert vlp_data([*argv[:3], str(again), *argv[4:]]) == 0
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}  # noqa: E731
    assert digest(again) == digest(out)  # deterministic, random weights included
    assert not list(tmp_path.glob(".*images*")) and not list(tmp_path.glob("*.partial"))


def test_bad_arguments_are_clear_errors(source, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    cases = [
        (["--out", str(tmp_path / "full"), "--model", TINY], "not empty"),
        (["--out", str(tmp_path / "o1"), "--model", str(tmp_path / "nope.json")], "nope.json does not exist"),
        (["--out", str(tmp_path / "o2"), "--model", "no-such-model"], "no-such-model"),
    ]
    for extra, message in cases:
        assert vlp_data(["neighbours", str(source), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    write_shards(tmp_path / "one", [{"__key__": "a", "png": png(), "txt": b"alone"}], shard_size=1)
    assert vlp_data(["neighbours", str(tmp_path / "one"), "--out", str(tmp_path / "o3"), "--model", TINY]) == 1
    assert "no sample got a neighbour" in capsys.readouterr().err
