"""The loader's options for seeded methods: fixed or random negatives, and neighbours (hard-negative images)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from data_pipelines.cli import main as vlp_data
from data_pipelines.loader import DataPipelineError, StreamingLoader
from tests.conftest import deadline, png, simple_samples, write_shards


def loader(spec, preprocess, tokenizer, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("drop_last", False)
    kw.setdefault("epochs", 1)
    return StreamingLoader(spec, preprocess=preprocess, tokenizer=tokenizer, **kw)


def world_members(world: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted((world / "train").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def token_rows(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts).tolist() if texts else []


def test_fixed_negatives_are_the_first_k_in_every_epoch(world, preprocess, tokenizer):
    records = {k: json.loads(m["json"]) for k, m in world_members(world).items()}
    k = 2
    types = ["swap_adjectives", "replace_adjectives", "replace_nouns", "replace_relation"]
    seen: dict[str, dict[str, list]] = {"fixed": {}, "random": {}}
    for sampling in seen:
        ld = loader(
            world / "train", preprocess, tokenizer, num_negatives=k, negative_types=types, epochs=3,
            negative_sampling=sampling,
        )  # fmt: skip
        for batch in ld:
            for i, key in enumerate(batch["key"]):
                seen[sampling].setdefault(key, []).append(batch["neg_text"][i].tolist())
    varied = 0
    for key, rows in seen["fixed"].items():
        own = [n["text"] for n in records[key]["negatives"] if n["type"] in types]
        first = token_rows(tokenizer, own[:k]) + token_rows(tokenizer, [""] * (k - min(k, len(own))))
        assert rows == [first] * 3, key
        varied += len(own) > k and len({json.dumps(r) for r in seen["random"][key]}) > 1
    assert varied > 50  # random: other draws in other epochs
    # The world orders each sample's negatives by its own seed: the first K are not always the same types.
    assert len({tuple(n["type"] for n in r["negatives"][:k]) for r in records.values()}) > 10
    with pytest.raises(ValueError, match="negative_sampling.*'first'"):
        loader(world / "train", preprocess, tokenizer, negative_sampling="first")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_neighbours_come_in_the_same_row(world, preprocess, tokenizer, num_workers):
    members = world_members(world)
    k = 3
    n = 0
    ld = loader(world / "train", preprocess, tokenizer, num_negatives=k, neighbours=True, num_workers=num_workers)
    for batch in ld:
        b = len(batch["key"])
        assert batch["neighbour_image"].shape == batch["image"].shape
        assert batch["neighbour_text"].shape == batch["text"].shape
        assert batch["neighbour_neg_text"].shape == (b, k, 77) and batch["neighbour_neg_mask"].shape == (b, k)
        for i, key in enumerate(batch["key"]):
            nb = json.loads(members[key]["json"])["neighbour"]
            assert batch["neighbour_key"][i] == nb["key"] == f"{key}-twin"
            image = Image.open(io.BytesIO(members[key]["neighbour.png"])).convert("RGB")
            assert torch.allclose(batch["neighbour_image"][i], preprocess(image), atol=1e-6)
            assert batch["neighbour_text"][i].tolist() == token_rows(tokenizer, [nb["caption"]])[0]
            negs = token_rows(tokenizer, [x["text"] for x in nb["negatives"]])
            mask = batch["neighbour_neg_mask"][i].tolist()
            assert mask == [j < len(negs) for j in range(k)]
            for j in range(k):
                assert batch["neighbour_neg_text"][i, j].tolist() in (negs if mask[j] else token_rows(tokenizer, [""]))
            n += 1
    assert n == len(members) and not ld.skipped
    plain = next(iter(loader(world / "train", preprocess, tokenizer, num_negatives=k)))
    assert not any(name.startswith("neighbour") for name in plain)


def test_neighbour_kinds_keep_only_those_twins(world, preprocess, tokenizer):
    """data.neighbour_kinds: only the samples whose twin is of the kinds asked for, the others counted."""
    members = world_members(world)
    kinds = {k: json.loads(m["json"])["neighbour"]["twin"] for k, m in members.items()}
    ld = loader(world / "train", preprocess, tokenizer, neighbours=True, neighbour_kinds=["mirror_relation"])
    keys = [key for batch in ld for key in batch["key"]]
    mirrored = sorted(k for k, kind in kinds.items() if kind == "mirror_relation")
    # Every mirrored sample comes at its own position; every other position holds a stand-in drawn from
    # it (the batches keep their shape on every rank), so the mirrored samples fill the whole epoch.
    assert set(keys) == set(mirrored) and 0 < len(mirrored) < len(members) and len(keys) == len(members)
    assert set(ld.skipped) == {"other_neighbour_kind"}
    assert ld.skipped["other_neighbour_kind"] >= len(members) - len(mirrored)


def test_samples_without_a_neighbour_are_skipped_and_counted(tmp_path, train_preprocess, tokenizer):
    samples = simple_samples(24)
    for i, s in enumerate(samples):
        if i % 3:  # two in three have one
            s["neighbour.jpg" if i % 2 else "neighbour.png"] = png((0, i, 0))
            s["json"] = json.dumps({"neighbour": {"key": f"n{i}", "caption": f"other {i}", "negatives": []}}).encode()
    samples[1]["json"] = json.dumps({"neighbour": {"key": "n1", "negatives": []}}).encode()  # no caption
    del samples[2]["neighbour.png"]  # a field without its image
    write_shards(tmp_path, samples, shard_size=6)
    ld = loader(tmp_path, train_preprocess, tokenizer, neighbours=True, num_workers=2, epochs=1)
    keys = [k for b in ld for k in b["key"]]
    assert set(keys) == {s["__key__"] for i, s in enumerate(samples) if i % 3 and i not in (1, 2)}
    assert len(keys) == len(samples)  # the skipped ones' positions hold stand-ins
    assert set(ld.skipped) == {"missing_neighbour"} and ld.skipped["missing_neighbour"] >= 10


def gradient_png(i: int) -> bytes:
    image = Image.linear_gradient("L").resize((48, 48)).rotate(15 * i).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_a_neighbour_is_augmented_with_its_own_seed(tmp_path, train_preprocess, tokenizer):
    samples = simple_samples(16)
    for i, s in enumerate(samples):  # the neighbour is the very same image
        s["png"] = s["neighbour.png"] = gradient_png(i)
        s["json"] = json.dumps({"neighbour": {"key": s["__key__"], "caption": "same"}}).encode()
    write_shards(tmp_path, samples, shard_size=8)

    def run():
        return list(loader(tmp_path, train_preprocess, tokenizer, neighbours=True, num_workers=2, captions=True))

    a, b = run(), run()
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["neighbour_image"], y["neighbour_image"]) and torch.equal(x["image"], y["image"])
        assert not torch.equal(x["neighbour_image"], x["image"])  # another crop of the same picture
        assert x["neighbour_caption"] == ["same"] * len(x["key"]) and x["neighbour_key"] == x["key"]


def test_neighbours_on_shards_without_any_fail_fast(tmp_path, preprocess, tokenizer, capsys):
    write_shards(tmp_path, simple_samples(40), shard_size=10)
    with deadline(60):
        with pytest.raises(DataPipelineError, match="missing_neighbour"):
            list(loader(tmp_path, preprocess, tokenizer, neighbours=True, num_workers=2, epochs=1))
        with pytest.raises(DataPipelineError, match="neighbour.<ext>"):
            list(loader(tmp_path, preprocess, tokenizer, neighbours=True, mode="resampled", max_consecutive_skips=20))
        assert vlp_data(["peek", str(tmp_path), "--neighbours", "--workers", "0", "--batch-size", "4"]) == 1
    assert "missing_neighbour" in capsys.readouterr().err


def test_peek_shows_neighbours(world, capsys):
    argv = ["peek", str(world / "train"), "--neighbours", "--negatives", "2", "--batches", "1", "--workers", "0"]
    assert vlp_data([*argv, "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "'neighbour_image': [4, 3, 64, 64]" in out and "'neighbour_neg_text': [4, 2, 77]" in out
