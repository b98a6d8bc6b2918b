"""The streaming loader: coverage per epoch, weights, determinism, exact resume, bad input."""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from data_pipelines.loader import DataPipelineError, StreamingLoader
from data_pipelines.shards.reader import SkipCounter, iter_shard
from data_pipelines.shards.specs import SpecError
from tests.conftest import deadline, png, simple_samples, write_shards


def loader(spec, preprocess, tokenizer, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("epochs", 1)
    kw.setdefault("drop_last", False)
    return StreamingLoader(spec, preprocess=preprocess, tokenizer=tokenizer, **kw)


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def all_train_keys(world: Path) -> list[str]:
    keys = []
    for tar in sorted((world / "train").glob("*.tar")):
        with tarfile.open(tar) as tf:
            keys += sorted({m.name.split(".")[0] for m in tf.getmembers()})
    return keys


def test_shard_round_trip(tmp_path, preprocess, tokenizer):
    samples = simple_samples(23)
    for s in samples:
        s["json"] = json.dumps({"negatives": [f"not caption {s['__key__']}"]}).encode()
    paths = write_shards(tmp_path, samples, shard_size=10)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert json.loads((tmp_path / "sizes.json").read_text()) == {
        p.name: n for p, n in zip(paths, (10, 10, 3), strict=True)
    }
    counter = SkipCounter()
    read = [s for p in paths for s in iter_shard(str(p), counter)]
    assert [{k: v for k, v in s.items() if not k.startswith("__url")} for s in read] == samples
    assert not counter.counts
    batches = list(loader(str(tmp_path), preprocess, tokenizer, shuffle_buffer=0, num_negatives=1))
    assert keys_of(batches) == [s["__key__"] for s in samples]
    first = batches[0]
    assert torch.equal(first["text"], tokenizer([f"caption {i}" for i in range(8)]))
    assert torch.equal(first["neg_text"][:, 0], tokenizer([f"not caption s{i:05d}" for i in range(8)]))
    assert first["image"].shape == (8, 3, 32, 32)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_split_mode_sees_every_sample_once_per_epoch(world, preprocess, tokenizer, num_workers):
    expected = all_train_keys(world)
    per_epoch: dict[int, list[str]] = {0: [], 1: []}
    for rank in range(2):  # 2 ranks x 2 workers
        ld = loader(world / "train", preprocess, tokenizer, rank=rank, world_size=2, num_workers=num_workers, epochs=2)
        for batch in ld:
            per_epoch[ld.epoch] += batch["key"]
    for keys in per_epoch.values():
        assert len(keys) == len(expected) and sorted(keys) == expected
    assert per_epoch[0] != per_epoch[1]  # shards and samples are reshuffled each epoch


def test_resampled_mode_follows_source_weights(tmp_path, preprocess, tokenizer):
    write_shards(tmp_path / "a", simple_samples(40, "a"), shard_size=5)
    write_shards(tmp_path / "b", simple_samples(40, "b"), shard_size=5)
    spec = f"{tmp_path / 'a'}::{tmp_path / 'b'}"
    ld = loader(spec, preprocess, tokenizer, mode="resampled", weights=[1, 3], epoch_samples=4000, batch_size=50)
    origin = Counter(k[0] for k in keys_of(ld))
    share_b = origin["b"] / sum(origin.values())
    assert sum(origin.values()) == 4000
    assert abs(share_b - 0.75) < 0.05, origin
    with pytest.raises(ValueError, match="resampled"):
        loader(spec, preprocess, tokenizer, weights=[1, 3])


def test_same_seed_same_stream_other_seed_other_order(world, train_preprocess, tokenizer):
    def run(seed):
        batches = list(loader(world / "train", train_preprocess, tokenizer, seed=seed, num_workers=2))
        return keys_of(batches), torch.cat([b["image"] for b in batches])

    keys_a, images_a = run(0)
    keys_b, images_b = run(0)
    keys_c, _ = run(1)
    assert keys_a == keys_b and torch.equal(images_a, images_b)  # augmentation included
    assert keys_c != keys_a and sorted(keys_c) == sorted(keys_a)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batched_pixels_equal_open_clips_transform_per_image(world, train_preprocess, tokenizer, num_workers):
    """The loader runs ToTensor and Normalize once per batch: the pixels must be bit-identical to
    open_clip's transform applied whole to each image (a lambda is not split)."""
    whole = lambda image: train_preprocess(image)  # noqa: E731
    split = loader(world / "train", train_preprocess, tokenizer, num_workers=num_workers, shuffle_buffer=50)
    assert split.dataset.transform.normalize is not None
    reference = loader(world / "train", whole, tokenizer, num_workers=num_workers, shuffle_buffer=50)
    assert reference.dataset.transform.normalize is None
    state = torch.get_rng_state()
    pairs = list(zip(split, reference, strict=True))
    if num_workers == 0:  # in-process, seeding per sample must leave the trainer's generator alone
        assert torch.equal(torch.get_rng_state(), state)
    assert sum(len(a["key"]) for a, _ in pairs) == len(all_train_keys(world))
    for a, b in pairs:
        assert a["key"] == b["key"] and a["image"].dtype == b["image"].dtype == torch.float32
        assert torch.equal(a["image"], b["image"])


def test_workers_run_at_the_niceness_asked(world, preprocess, tokenizer):
    base = os.nice(0)

    def checked(image):  # runs in the worker: a wrong niceness fails the iteration
        if os.nice(0) != min(19, base + 5):
            raise RuntimeError(f"worker niceness {os.nice(0)}, expected {base + 5}")
        return preprocess(image)

    batches = list(loader(world / "train", checked, tokenizer, num_workers=1, worker_nice=5))
    assert sum(len(b["key"]) for b in batches) == len(all_train_keys(world))
    assert os.nice(0) == base  # the calling process keeps its own
    with pytest.raises(ValueError, match="worker_nice must be in 0..19"):
        loader(world / "train", preprocess, tokenizer, worker_nice=-1)


def test_workers_persist_across_epochs(world, preprocess, tokenizer, tmp_path):
    """The DataLoader's workers are started once and serve every epoch (no fork and import per epoch);
    each epoch still reads every sample once, in a new order."""
    pids = tmp_path / "pids"

    def recorded(image):  # runs in the worker
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return preprocess(image)

    ld = loader(world / "train", recorded, tokenizer, num_workers=2, epochs=3)
    per_epoch: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for batch in ld:
        per_epoch[ld.epoch] += batch["key"]
    assert len(set(pids.read_text().split())) == 2  # not 2 per epoch
    expected = all_train_keys(world)
    assert all(sorted(keys) == expected for keys in per_epoch.values())
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]


def test_closing_ends_the_workers_and_a_script_that_leaves_early_exits(world, preprocess, tokenizer):
    """The workers ignore SIGTERM (a preemption signal is the trainer's to handle), so the interpreter's
    exit, which ends children with SIGTERM and waits for them, hung when a loader was still alive then."""
    import multiprocessing
    import subprocess
    import sys

    with loader(world / "train", preprocess, tokenizer, num_workers=2, epochs=None) as ld:
        next(iter(ld))
        assert len(multiprocessing.active_children()) >= 2
    assert multiprocessing.active_children() == []
    assert len(next(iter(ld))["key"]) == 8  # iterating again starts new workers
    ld.close()

    script = (
        "import open_clip\n"
        "from data_pipelines.loader import StreamingLoader\n"
        f"ld = StreamingLoader({str(world / 'train')!r}, preprocess=open_clip.image_transform(32, is_train=False),\n"
        "    tokenizer=open_clip.get_tokenizer('ViT-B-32'), batch_size=4, num_workers=2)\n"
        "for i, batch in enumerate(ld):\n"
        "    if i == 2:\n"
        "        break\n"
        "print('leaving', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr


@pytest.mark.parametrize(
    "num_workers,resume_workers,consumed,neighbours",
    [(0, 0, 7, False), (2, 3, 9, False), (3, 1, 4, False), (2, 2, 35, False), (2, 0, 30, True)],
)
def test_resume_mid_epoch_yields_exactly_the_rest(
    world, train_preprocess, tokenizer, num_workers, resume_workers, consumed, neighbours
):
    # 35 batches of 16 cross into the second epoch (25 per epoch); the resumed loader may have another
    # number of workers and still continues exactly.
    def make(workers, **kw):
        return loader(
            world / "train",
            train_preprocess,
            tokenizer,
            num_workers=workers,
            epochs=2,
            batch_size=16,
            shuffle_buffer=100,
            neighbours=neighbours,
            num_negatives=2 if neighbours else 0,
            **kw,
        )

    full = list(make(num_workers))
    first = make(num_workers)
    it = iter(first)
    head = [next(it) for _ in range(consumed)]
    state = json.loads(json.dumps(first.state_dict()))  # it must survive a JSON checkpoint
    assert keys_of(head) == keys_of(full[:consumed])
    resumed = make(resume_workers)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert keys_of(rest) == keys_of(full[consumed:])
    for a, b in zip(rest, full[consumed:], strict=True):
        assert a.keys() == b.keys() and ("neighbour_image" in a) == neighbours
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_what_the_order_depends_on_is_refused_naming_the_key(world, tmp_path, preprocess, tokenizer):
    state = loader(world / "train", preprocess, tokenizer, shuffle_buffer=100).state_dict()
    for key, kw in [("seed", {"seed": 1}), ("shuffle_buffer", {"shuffle_buffer": 10}), ("mode", {"mode": "resampled"})]:
        other = loader(world / "train", preprocess, tokenizer, **{"shuffle_buffer": 100, **kw})
        with pytest.raises(DataPipelineError, match=f"saved with {key}="):
            other.load_state_dict(state)
    fewer = sorted((world / "train").glob("*.tar"))[:-1]
    with pytest.raises(DataPipelineError, match="saved with data="):
        loader([str(p) for p in fewer], preprocess, tokenizer, shuffle_buffer=100).load_state_dict(state)
    with pytest.raises(DataPipelineError, match="version"):
        loader(world / "train", preprocess, tokenizer).load_state_dict({"version": 1, "positions": {"0": 3}})


def rank_batches(world, preprocess, tokenizer, world_size, batch_size, workers, state=None, **kw):
    """Every rank's batches of one epoch, as global batches: per batch index, the ranks' rows joined."""
    per_rank = []
    for rank in range(world_size):
        ld = loader(
            world / "train", preprocess, tokenizer, rank=rank, world_size=world_size, batch_size=batch_size,
            num_workers=workers, drop_last=True, shuffle_buffer=64, **kw,
        )  # fmt: skip
        if state is not None:
            ld.load_state_dict(state)
        per_rank.append(list(ld))
    joined = []
    for parts in zip(*per_rank, strict=True):
        joined.append({"key": [k for p in parts for k in p["key"]], "image": torch.cat([p["image"] for p in parts])})
    return joined


@pytest.mark.parametrize("mode", ["split", "resampled"])
def test_global_batches_do_not_depend_on_ranks_or_workers(world, train_preprocess, tokenizer, mode):
    """Global batch i holds the same samples, augmented the same way, for 1 x 16 in process, 2 x 8 with
    2 workers each and 4 x 4 with 3 workers each: the order is a function of (seed, epoch) alone."""
    kw = {"mode": mode, "epoch_samples": 320} if mode == "resampled" else {}
    one = rank_batches(world, train_preprocess, tokenizer, 1, 16, 0, **kw)
    assert len(one) == (320 if mode == "resampled" else 400) // 16
    for shape in [(2, 8, 2), (4, 4, 3)]:
        other = rank_batches(world, train_preprocess, tokenizer, *shape, **kw)
        assert [b["key"] for b in other] == [b["key"] for b in one], shape
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one, other, strict=True)), shape


def test_a_position_saved_on_two_ranks_continues_on_one(world, preprocess, tokenizer):
    full = rank_batches(world, preprocess, tokenizer, 1, 16, 0)
    first = loader(world / "train", preprocess, tokenizer, rank=0, world_size=2, batch_size=8, num_workers=2,
                   drop_last=True, shuffle_buffer=64)  # fmt: skip
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    assert state["position"] == 5 * 16 and state["global_batch"] == 16
    rest = rank_batches(world, preprocess, tokenizer, 1, 16, 1, state=state)
    assert [b["key"] for b in rest] == [b["key"] for b in full[5:]]
    # ... and on four ranks of 4, which splits each global batch of 16 four ways.
    rest4 = rank_batches(world, preprocess, tokenizer, 4, 4, 0, state=state)
    assert [b["key"] for b in rest4] == [b["key"] for b in full[5:]]


def test_a_restored_position_reads_only_the_samples_after_it(world, preprocess, tokenizer):
    """The first batch after a restore reads its own samples' bytes and nothing before them: the
    shards are read by offset from their index, not through the consumed part."""
    from data_pipelines.shards.index import load_index

    first = loader(world / "train", preprocess, tokenizer, batch_size=16, shuffle_buffer=64, drop_last=True)
    it = iter(first)
    for _ in range(20):
        next(it)
    resumed = loader(world / "train", preprocess, tokenizer, batch_size=16, shuffle_buffer=64, drop_last=True)
    resumed.load_state_dict(first.state_dict())
    batch = next(iter(resumed))
    spans = {}
    for tar in (world / "train").glob("*.tar"):
        index = load_index(tar)
        spans.update({key: index.span(i)[1] for i, key in enumerate(index.keys)})
    assert resumed.bytes_read == sum(spans[k] for k in batch["key"])
    assert resumed.bytes_read < 16 * max(spans.values())


def test_negatives_as_padded_tokens_with_mask(world, preprocess, tokenizer):
    records = {}
    for tar in (world / "train").glob("*.tar"):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    records[m.name[:-5]] = json.loads(tf.extractfile(m).read())
    k = 3
    batch = next(iter(loader(world / "train", preprocess, tokenizer, num_negatives=k, batch_size=32)))
    assert batch["neg_text"].shape == (32, k, 77) and batch["neg_mask"].shape == (32, k)
    short = 0
    for i, key in enumerate(batch["key"]):
        negs = [n["text"] for n in records[key]["negatives"]]
        assert batch["neg_mask"][i].tolist() == [j < len(negs) for j in range(k)]
        for j in range(min(k, len(negs))):
            got = batch["neg_text"][i, j]
            assert any(torch.equal(got, tokenizer([t])[0]) for t in negs)  # one of this sample's own negatives
        if len(negs) < k:
            short += 1
            assert torch.equal(batch["neg_text"][i, len(negs)], tokenizer([""])[0])
    assert short > 0  # single-object scenes have fewer than 3 negatives


def _broken_dataset(folder: Path) -> dict:
    """Good shards plus every kind of bad input; returns the expected good keys and skip counts."""
    good = simple_samples(30, "g")
    bad = [
        {"__key__": "b_corrupt1", "png": b"\x89PNG not really", "txt": b"broken image"},
        {"__key__": "b_corrupt2", "jpg": b"\xff\xd8 garbage", "txt": b"broken jpeg"},
        {"__key__": "b_corrupt3", "png": png()[:40], "txt": b"cut image"},
        {"__key__": "b_nocap", "png": png()},
        {"__key__": "b_emptycap", "png": png(), "txt": b"   \n"},
        {"__key__": "b_noimage", "txt": b"caption without image"},
        {"__key__": "b_badjson", "png": png(), "txt": b"ok", "json": b"{not json"},
    ]
    mixed = good[:20] + bad
    mixed = [mixed[i] for i in (0, 20, 1, 21, 2, 22, 3, 23, 4, 24, 5, 25, 6, 26)] + mixed[7:20]
    write_shards(folder, mixed, shard_size=10)
    # A truncated shard: the first samples survive, the cut one and the rest are lost.
    trunc_dir = folder / "t"
    write_shards(trunc_dir, good[20:], shard_size=10)
    data = (trunc_dir / "shard-000000.tar").read_bytes()
    (folder / "shard-truncated.tar").write_bytes(data[: len(data) * 6 // 10])
    (folder / "shard-garbage.tar").write_bytes(b"this is not a tar file at all" * 40)
    (folder / "shard-empty.tar").write_bytes(b"")
    return {
        "good": [s["__key__"] for s in mixed if s["__key__"].startswith("g")],
        "truncated": [s["__key__"] for s in good[20:]],
        "skipped": {
            "corrupt_image": 3,
            "missing_caption": 2,
            "missing_image": 1,
            "bad_json": 1,
            "unreadable_shard": 2,
            "truncated_shard": 1,
        },
    }


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_input_is_skipped_counted_and_logged_once(tmp_path, preprocess, tokenizer, caplog, num_workers):
    expected = _broken_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="data_pipelines"), deadline(60):
        # every .tar in the folder; negatives requested, so the JSON member is read (and can be broken)
        ld = loader(tmp_path, preprocess, tokenizer, num_workers=num_workers, num_negatives=1)
        keys = keys_of(ld)
    recovered = {k for k in keys if k in expected["truncated"]}
    # Every good sample comes once at its own position; a bad one's slot is filled by a stand-in drawn
    # from its position, which may repeat a good sample (or meet a bad one again, counted again).
    assert {k for k in keys if k not in expected["truncated"]} == set(expected["good"])
    assert 0 < len(recovered) < len(expected["truncated"])
    assert len(keys) == len(expected["good"]) + 7 + len(recovered)  # every indexed sample's slot
    for reason, n in expected["skipped"].items():
        if reason.endswith("_shard"):  # counted once, when the shards are indexed
            assert ld.skipped[reason] == n, reason
        else:
            assert ld.skipped[reason] >= n, reason
    if num_workers == 0:  # worker processes log to their own stderr
        messages = [r.getMessage() for r in caplog.records]
        assert sum("corrupt_image" in m for m in messages) == 1


def test_everything_filtered_fails_fast(tmp_path, preprocess, tokenizer):
    write_shards(tmp_path, [{"__key__": f"k{i}", "txt": b"no image here"} for i in range(40)], shard_size=10)
    with deadline(60):
        with pytest.raises(DataPipelineError, match="missing_image"):
            list(loader(tmp_path, preprocess, tokenizer, num_workers=2))
        with pytest.raises(DataPipelineError, match="in a row"):
            list(loader(tmp_path, preprocess, tokenizer, mode="resampled", max_consecutive_skips=25))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "a.tar").write_bytes(b"not a tar" * 100)
    with deadline(60), pytest.raises(DataPipelineError, match="no shard holds a sample"):
        list(loader(garbage, preprocess, tokenizer, mode="resampled"))


def test_wrong_paths_are_clear_errors(tmp_path, preprocess, tokenizer):
    with pytest.raises(SpecError, match="matches no file"):
        loader(str(tmp_path / "nothing-{000..003}.tar"), preprocess, tokenizer)
    with pytest.raises(SpecError, match="no .tar shards"):
        loader(tmp_path, preprocess, tokenizer)
    write_shards(tmp_path, simple_samples(5), shard_size=5)
    with pytest.raises(SpecError, match="1 of 2 shards do not exist"):
        loader(str(tmp_path / "shard-{000000..000001}.tar"), preprocess, tokenizer)
    with pytest.raises(DataPipelineError, match="holds no global batch of 16"):
        loader(tmp_path, preprocess, tokenizer, rank=0, world_size=2, drop_last=True)


def test_pipe_file_and_fsspec_urls(tmp_path, preprocess, tokenizer):
    import fsspec

    write_shards(tmp_path, simple_samples(12), shard_size=6)
    local = keys_of(loader(str(tmp_path / "shard-{000000..000001}.tar"), preprocess, tokenizer, shuffle_buffer=0))
    piped = loader(f"pipe:cat {tmp_path}/shard-{{000000..000001}}.tar", preprocess, tokenizer, shuffle_buffer=0)
    assert keys_of(piped) == local
    as_url = loader(f"file://{tmp_path}/shard-{{000000..000001}}.tar", preprocess, tokenizer, shuffle_buffer=0)
    assert keys_of(as_url) == local
    memory = fsspec.filesystem("memory")
    for name in ("shard-000000.tar", "shard-000001.tar"):
        memory.pipe(f"/vlp-test/{name}", (tmp_path / name).read_bytes())
    remote = loader("memory://vlp-test/shard-{000000..000001}.tar", preprocess, tokenizer, shuffle_buffer=0)
    assert keys_of(remote) == local
    failing = loader(f"pipe:cat {tmp_path}/missing.tar::{tmp_path}", preprocess, tokenizer, retry_backoff_s=0)
    assert sorted(keys_of(failing)) == sorted(local)
    assert failing.skipped == {"shard_read_retries": 3, "unreadable_shard": 1}  # retried, then skipped


def test_reads_img2dataset_output_as_is(tmp_path, preprocess, tokenizer):
    from PIL import Image

    samples = []
    for i in range(9):
        import io

        buf = io.BytesIO()
        Image.new("RGB", (20, 14), (i * 20, 100, 50)).save(buf, format="JPEG")
        meta = {
            "url": f"http://example.com/{i}.jpg",
            "caption": f"photo {i}",
            "key": f"{i:09d}",
            "status": "success",
            "error_message": None,
            "width": 20,
            "height": 14,
            "original_width": 640,
            "original_height": 480,
        }
        samples.append(
            {
                "__key__": f"{i:09d}",
                "jpg": buf.getvalue(),
                "txt": f"photo {i}".encode(),
                "json": json.dumps(meta).encode(),
            }
        )
    write_shards(tmp_path, samples, shard_size=5, pattern="{:05d}.tar")
    os.remove(tmp_path / "sizes.json")
    for n in range(2):  # img2dataset writes these beside every shard
        (tmp_path / f"{n:05d}.parquet").write_bytes(b"PAR1 not read by the loader PAR1")
        (tmp_path / f"{n:05d}_stats.json").write_text(json.dumps({"count": 5, "successes": 5}))
    ld = loader(tmp_path, preprocess, tokenizer, shuffle_buffer=0)
    assert keys_of(ld) == [s["__key__"] for s in samples] and not ld.skipped


def test_peek_streams_batches_and_fails_on_bad_data(tmp_path, capsys):
    from data_pipelines.cli import main as vlp_data

    write_shards(tmp_path / "ok", simple_samples(12), shard_size=6)
    assert vlp_data(["peek", str(tmp_path / "ok"), "--batches", "2", "--batch-size", "4", "--workers", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["batches"] == 2 and summary["samples"] == 8 and summary["state"]["position"] == 8
    # Data that cannot be used is exit status 1 (a runtime failure); shards that do not exist are 2 (the
    # command line's to fix: vlp.common.cli's convention).
    write_shards(tmp_path / "bad", [{"__key__": f"k{i}", "txt": b"no image"} for i in range(40)], shard_size=10)
    with deadline(60):
        assert vlp_data(["peek", str(tmp_path / "bad"), "--workers", "0"]) == 1
    assert "missing_image" in capsys.readouterr().err
    assert vlp_data(["peek", str(tmp_path / "none-{0..3}.tar")]) == 2
    assert "matches no file" in capsys.readouterr().err
