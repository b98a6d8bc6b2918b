"""Retried shard reads: a transient failure (a `pipe:` command exiting non-zero, at open or mid-stream)
is read again, passing over the samples already delivered; only a shard that keeps failing is skipped.

The faults are real: a script run as a `pipe:` URL fails its first passes (a counter file beside
the shard says which pass it is), emitting nothing or the first bytes of the shard, then emits it whole.
"""

from __future__ import annotations

import json
import logging
import sys
import tarfile
from pathlib import Path

import pytest

from data_pipelines.loader import StreamingLoader
from data_pipelines.shards import reader
from data_pipelines.shards.reader import SHARD_READ_RETRIES, SkipCounter, iter_shard
from tests.conftest import deadline, simple_samples, write_shards

# usage: flaky.py FAILS CUT STATUS SHARD -- passes 1..FAILS emit the first CUT bytes of SHARD and exit
# with STATUS (1: a failing command; 0: a stream cut short without an error); later passes emit it whole
# (exit 1 if it is gone). A failing pass exits only once the reader has emptied the pipe. webdataset
# drops the bytes of a read that finds the command failed, so with STATUS 1 the reader may lose up to
# a record (10 KiB) before the cut; with STATUS 0 it gets every byte.
FLAKY = """\
import fcntl, os, struct, sys, termios, time
fails, cut, status, shard = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
state = shard + ".passes"
n = (int(open(state).read()) if os.path.exists(state) else 0) + 1
open(state, "w").write(str(n))
try:
    data = open(shard, "rb").read()
except OSError as exn:
    sys.exit(str(exn))
out = sys.stdout.buffer
if n > fails:
    out.write(data)
    sys.exit(0)
if cut:
    out.write(data[:cut])
    out.flush()
    while struct.unpack("i", fcntl.ioctl(1, termios.FIONREAD, b"0000"))[0]:
        time.sleep(0.005)
    time.sleep(0.1)
sys.exit(status)
"""


@pytest.fixture
def shard(tmp_path) -> Path:
    return write_shards(tmp_path / "shards", simple_samples(12), shard_size=12)[0]


def flaky_url(shard: Path | str, fails: int, cut: int = 0, status: int = 1) -> str:
    """A `pipe:` URL (or spec, when ``shard`` is a brace pattern) whose first ``fails`` passes fail."""
    script = Path(shard).parent.parent / "flaky.py"
    script.write_text(FLAKY)
    return f"pipe:{sys.executable} -S {script} {fails} {cut} {status} {shard}"


def inside_6th_caption(shard: Path) -> int:
    """A cut inside the 6th sample's last member: 5 samples come whole before it."""
    return member_offset(shard, "s00005.txt") + 700


def passes(shard: Path) -> int:
    state = Path(f"{shard}.passes")
    return int(state.read_text()) if state.exists() else 0


def clean_read(shard: Path) -> list[dict]:
    counter = SkipCounter()
    samples = [{k: v for k, v in s.items() if k != "__url__"} for s in iter_shard(str(shard), counter)]
    assert not counter.counts and len(samples) == 12
    return samples


def read(url: str, counter: SkipCounter, **kw) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "__url__"} for s in iter_shard(url, counter, **kw)]


def member_offset(shard: Path, name: str) -> int:
    """Where the header of member ``name`` starts in the shard."""
    with tarfile.open(shard) as tf:
        return tf.getmember(name).offset


def test_pipe_failing_at_open_is_retried_with_backoff(shard, caplog, monkeypatch):
    monkeypatch.setattr(reader, "_retry_log", reader._RetryLog())  # other tests' retries do not mute these
    url = flaky_url(shard, fails=2)
    counter, delays = SkipCounter(), []
    with caplog.at_level(logging.WARNING, logger="data_pipelines"), deadline(20):
        got = read(url, counter, retries=3, backoff_s=0.01, sleep=delays.append)
    assert got == clean_read(shard)
    assert counter.as_dict() == {SHARD_READ_RETRIES: 2}  # retried twice, nothing skipped
    assert delays == [0.01, 0.02] and passes(shard) == 3  # backoff doubles
    retries = [r.getMessage() for r in caplog.records if "retrying shard" in r.getMessage()]
    assert len(retries) == 2 and all(url in m and "exit 1" in m for m in retries)
    assert "retry 1 of 3" in retries[0] and "retry 2 of 3" in retries[1]


def test_retry_warnings_are_rate_limited(caplog):
    limited = reader._RetryLog(limit=2, window_s=3600)
    with caplog.at_level(logging.WARNING, logger="data_pipelines"):
        for i in range(5):
            limited.warn("retrying shard %d", i)
    assert [r.getMessage() for r in caplog.records] == ["retrying shard 0", "retrying shard 1"]
    assert limited.suppressed == 3


@pytest.mark.parametrize(("status", "where"), [(1, "inside_a_member"), (0, "inside_a_member"), (0, "between_members")])
def test_pipe_failing_mid_stream_resumes_after_the_samples_delivered(shard, status, where):
    # The first two passes break off inside the 6th sample's caption, or right before that member:
    # there a stream that ends without an error ends cleanly, after a sample that lacks its caption,
    # which must not be delivered as it is.
    cut = inside_6th_caption(shard) if where == "inside_a_member" else member_offset(shard, "s00005.txt")
    url = flaky_url(shard, fails=2, cut=cut, status=status)
    counter = SkipCounter()
    got, delivered_in = [], []
    with deadline(20):
        for sample in iter_shard(url, counter, retries=3, backoff_s=0):
            got.append({k: v for k, v in sample.items() if k != "__url__"})
            delivered_in.append(passes(shard))
    assert got == clean_read(shard)  # same keys, members and order: nothing lost or repeated
    assert counter.as_dict() == {SHARD_READ_RETRIES: 2}
    # The first pass delivered samples before the cut, the third the rest. (A pass that ends in a
    # failed exit may lose its last bytes, or not, as the exit races the read; a later pass that gets
    # them delivers the samples they complete.)
    first = delivered_in.count(1)
    assert delivered_in == sorted(delivered_in) and 0 < first <= 5 and delivered_in[-1] == 3
    if status == 0:  # the reader gets every byte before the cut: 5 whole samples, then the 7 others
        assert delivered_in == [1] * 5 + [3] * 7


def test_shard_that_keeps_failing_is_retried_then_skipped(shard):
    with deadline(20):
        counter = SkipCounter()
        assert read(flaky_url(shard, fails=99), counter, retries=3, backoff_s=0) == []
        assert counter.as_dict() == {SHARD_READ_RETRIES: 3, "unreadable_shard": 1}
        assert passes(shard) == 4
        Path(f"{shard}.passes").unlink()
        counter = SkipCounter()  # failing mid-stream: the samples before the cut are kept, once
        got = read(flaky_url(shard, fails=99, cut=inside_6th_caption(shard)), counter, retries=2, backoff_s=0)
        assert 0 < len(got) <= 5 and got == clean_read(shard)[: len(got)]
        assert counter.as_dict() == {SHARD_READ_RETRIES: 2, "truncated_shard": 1}


def test_no_retries_reads_once_as_before(shard):
    for kw in ({}, {"retries": 0}):  # the old signature reads once
        Path(f"{shard}.passes").unlink(missing_ok=True)
        counter = SkipCounter()
        assert read(flaky_url(shard, fails=1), counter, **kw) == []
        assert counter.as_dict() == {"unreadable_shard": 1} and passes(shard) == 1


def test_local_files_broken_bytes_are_not_retried(shard, tmp_path):
    data = shard.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: inside_6th_caption(shard)])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar" * 200)

    def no_sleep(_):
        raise AssertionError("a local file's bytes were retried")

    for path, reason, kept in ((cut, "truncated_shard", 5), (garbage, "unreadable_shard", 0)):
        counter = SkipCounter()
        assert read(str(path), counter, retries=3, sleep=no_sleep) == clean_read(shard)[:kept]
        assert counter.as_dict() == {reason: 1}


@pytest.mark.parametrize("change", ["removed", "truncated", "replaced"])
def test_shard_vanishing_or_changing_between_retries(shard, tmp_path, change):
    """The first pass breaks off inside the 6th sample; before the retry the file goes away, is cut
    before the 3rd, or is rewritten with other samples. The samples delivered stay delivered, once,
    and the shard counts as truncated: after every retry when it is gone or short, at once when it
    reads differently."""
    other = write_shards(tmp_path / "other", simple_samples(12, prefix="x"), shard_size=12)[0]

    def between_passes(_):
        if change == "removed":
            shard.unlink(missing_ok=True)
        elif change == "truncated":
            shard.write_bytes(shard.read_bytes()[: member_offset(other, "x00002.png")])
        else:
            shard.write_bytes(other.read_bytes())

    clean = clean_read(shard)
    url = flaky_url(shard, fails=1, cut=inside_6th_caption(shard))
    counter = SkipCounter()
    with deadline(20):
        got = read(url, counter, retries=3, backoff_s=0.01, sleep=between_passes)
    assert 2 < len(got) <= 5 and got == clean[: len(got)]
    retried = 1 if change == "replaced" else 3
    assert counter.as_dict() == {SHARD_READ_RETRIES: retried, "truncated_shard": 1}


def test_streaming_loader_retries_and_reports_them(tmp_path, preprocess, tokenizer):
    paths = write_shards(tmp_path / "shards", simple_samples(24), shard_size=12)
    spec = flaky_url(f"{tmp_path}/shards/shard-{{000000..000001}}.tar", fails=1, cut=15000)  # about half

    def make(source, **kw):
        kw = {"batch_size": 4, "epochs": 1, "shuffle_buffer": 0, "drop_last": False, "num_workers": 0, **kw}
        return StreamingLoader(source, preprocess=preprocess, tokenizer=tokenizer, **kw)

    def keys(batches):
        return [k for b in batches for k in b["key"]]

    def reset():
        for p in paths:
            Path(f"{p}.passes").unlink(missing_ok=True)

    with deadline(20):
        clean = keys(make(str(tmp_path / "shards")))
        flaky = make(spec, read_retries=2, retry_backoff_s=0)
        assert keys(flaky) == clean
        assert flaky.skipped == {SHARD_READ_RETRIES: 2}  # one per shard, nothing skipped
        assert flaky.state_dict()["skipped"] == {SHARD_READ_RETRIES: 2}
        # Exact resume across a retried read: the raw stream is the clean one.
        reset()
        first = make(spec, read_retries=2, retry_backoff_s=0)
        it = iter(first)
        head = [next(it) for _ in range(2)]
        it.close()
        state = json.loads(json.dumps(first.state_dict()))
        reset()
        resumed = make(spec, read_retries=2, retry_backoff_s=0)
        resumed.load_state_dict(state)
        assert keys(head) + keys(resumed) == clean
        reset()
        # A new cache (this machine's copies were whole): each shard breaks off and counts as truncated.
        once = make(spec, read_retries=0, cache_dir=str(tmp_path / "another-cache"))
        got = keys(once)
        assert got == [k for k in clean if k in got] and len(got) < len(clean)
        assert once.skipped == {"truncated_shard": 2}
    with pytest.raises(ValueError, match="read_retries"):
        make(spec, read_retries=-1)
