"""vlp-study: the statistics against hand computations, the study file's checks, and a tiny study run
end to end (interrupted with Ctrl-C, resumed, aggregated)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.fault_hooks import environment
from tests.runs import REPO
from vlp.common.intervals import wilson
from vlp.study.cli import main as vlp_study
from vlp.study.spec import StudyError, load_study
from vlp.study.stats import binomial_two_sided, bootstrap_ci, mcnemar, paired_bootstrap

# ---------------------------------------------------------------- statistics


def test_bootstrap_interval_matches_the_binomial_one_for_one_seed():
    """One seed: the two-level bootstrap is the items' bootstrap, whose 95% interval for 300 Bernoulli
    items at p = 0.7 is close to the normal one, ±1.96·sqrt(p(1-p)/n) = ±5.19 points."""
    items = np.zeros(300, dtype=int)
    items[:210] = 1
    ci = bootstrap_ci([items], samples=4000)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 300)
    assert ci["mean"] == pytest.approx(0.7)
    assert ci["hi"] - ci["lo"] == pytest.approx(2 * half, rel=0.12)
    assert ci["lo"] < 0.7 < ci["hi"]
    lo, hi = wilson(210, 300)  # Wilson's interval, a closed form: nearly the same here
    assert (lo, hi) == pytest.approx((ci["lo"], ci["hi"]), abs=0.01)


def test_bootstrap_widens_with_seed_disagreement():
    agree = [np.r_[np.ones(150), np.zeros(150)]] * 3
    disagree = [np.r_[np.ones(n), np.zeros(300 - n)] for n in (60, 150, 240)]
    a, d = bootstrap_ci(agree), bootstrap_ci(disagree)
    assert a["mean"] == d["mean"] == pytest.approx(0.5)
    assert d["hi"] - d["lo"] > 2 * (a["hi"] - a["lo"])  # seeds at 20/50/80% cannot give a tight mean


def test_seeds_that_agree_add_no_evidence():
    """Every seed scores the same items: three identical seeds are one seed's evidence, not three."""
    items = np.r_[np.ones(150), np.zeros(150)]
    one, three = bootstrap_ci([items]), bootstrap_ci([items] * 3)
    assert (three["lo"], three["hi"]) == (one["lo"], one["hi"])


def test_mcnemar_beyond_a_float_power_of_two():
    """1100 discordant items: 2.0**1100 overflows a float; the exact test must still answer."""
    p = binomial_two_sided(500, 1100)
    assert 0.001 < p < 0.01  # normal approximation: z = (550-500)/sqrt(275) = 3.0 -> p = 0.0027


def test_paired_tests_by_hand():
    control = [np.r_[np.ones(100), np.zeros(100)]]
    same = paired_bootstrap(control, control)
    assert (same["delta"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    better = [np.ones(200)]  # right on the 100 the control got wrong, never worse
    p = paired_bootstrap(better, control)
    assert p["delta"] == pytest.approx(0.5) and p["lo"] > 0.4
    m = mcnemar(better, control)
    assert (m["b"], m["c"]) == (100, 0)
    assert m["p"] == pytest.approx(2 * 0.5**100)
    # b = 7, c = 3: two-sided exact p = 2·P(X ≤ 3), X ~ Bin(10, 1/2) = 2·(1+10+45+120)/1024
    assert binomial_two_sided(3, 10) == pytest.approx(2 * 176 / 1024)
    assert binomial_two_sided(0, 0) == 1.0


# ---------------------------------------------------------------- the study file


def _study_file(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


BASE = {
    "name": "tiny",
    "recipes": {"clip": {"config": "configs/clip.yaml"}},
    "evaluate": {"zeroshot": {"test": "data/x:test"}},
}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"colour": 1}, "unknown key(s) ['colour']"),
        (
            {"recipes": {"clip": {"config": "configs/nope.yaml"}}},
            "recipes.clip.config: configs/nope.yaml does not exist",
        ),
        ({"control": "negclip"}, "control 'negclip' is not one of the recipes"),
        ({"seeds": [0, 0]}, "seeds must be a non-empty list of distinct integers"),
        ({"vary": {"key": "train.max_steps"}}, "vary needs exactly 'key'"),
        ({"evaluate": {"zeroshot": {}, "probes": {}}}, "evaluate needs zeroshot and/or probes"),
    ],
)
def test_study_file_mistakes_are_named(tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(REPO)
    path = _study_file(tmp_path, {**BASE, **change})
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert vlp_study(["--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_every_committed_study_loads():
    os.chdir(REPO)
    for path in sorted((REPO / "configs" / "studies").glob("*.yaml")):
        study = load_study(path)
        assert study.control in [r.name for r in study.recipes]


# ---------------------------------------------------------------- a tiny study, end to end


def _tiny_study(tmp_path: Path, world: Path, exported: Path) -> Path:
    common = [
        f"model.name=local-dir:{exported}",
        f"data.train={world}/train",
        "data.shapes_world=",  # the recipes' data/shapes would be generated in the repository
        "data.workers=0",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.warmup_steps=1",
        "train.save_every=2",
        "train.log_every=1",
        "train.threads=1",
        "train.precision=fp32",
        "eval.every=2",
    ]
    body = {
        "name": "tiny",
        "description": "CLIP and DCL, one seed, four steps each",
        "control": "clip",
        "seeds": [0],
        "overrides": common,
        "recipes": {
            "clip": {"config": str(REPO / "configs/clip.yaml")},
            "dcl": {"config": str(REPO / "configs/dcl.yaml")},
        },
        "evaluate": {
            "start": str(exported),
            "zeroshot": {"heldout": f"{world}/zeroshot:heldout"},
            "probes": {"shapes": str(world / "compositional")},
            "headline": {"gain": "shapes/replace_rel", "cost": "zeroshot/heldout"},
        },
        "results": str(tmp_path / "results"),
        "runs": str(tmp_path / "runs"),
    }
    return _study_file(tmp_path, body)


def _study(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vlp.study", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_tiny_study_interrupted_resumed_and_aggregated(tmp_path, world, exported):
    path = _tiny_study(tmp_path, world, exported)
    results, runs = tmp_path / "results", tmp_path / "runs"
    # 1. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during the first trained cell.
    slow = environment(step_sleep=0.5)
    proc = _study(["--config", str(path)], env=slow)
    metrics = runs / "clip__seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metrics.is_file(), proc.communicate(timeout=60)[0]
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert "rerun the same command to resume" in out
    assert (results / "cells" / "start.json").is_file()  # the starting model was scored before
    assert not (results / "cells" / "clip__seed0.json").exists()
    assert list((runs / "clip__seed0" / "checkpoints").glob("step_*"))  # the trainer saved where it stopped
    attempts = runs / "clip__seed0" / "attempt_seconds"
    assert float(attempts.read_text()) > 0.5  # at least one step of 0.5 s
    attempts.write_text("1000.0")  # as if the first attempt had taken long: the total must carry it

    # 2. The same command resumes that cell from its checkpoint and runs the rest.
    second_start = time.monotonic()
    proc = _study(["--config", str(path)])
    out, _ = proc.communicate(timeout=600)
    second = time.monotonic() - second_start
    assert proc.returncode == 0, out
    assert "1 done, 2 to run" in out
    log = (runs / "clip__seed0.log").read_text()
    assert "resum" in log.lower()
    cells = {p.stem: json.loads(p.read_text()) for p in (results / "cells").glob("*.json")}
    assert set(cells) == {"start", "clip__seed0", "dcl__seed0"}
    assert 1000.0 < cells["clip__seed0"]["train_seconds"] < 1000.0 + second  # both attempts
    cell = cells["dcl__seed0"]
    assert cell["seed"] == 0 and cell["train"]["steps"] == 4 and cell["resolved_config"]["train"]["seed"] == 0
    assert cell["resolved_config"]["data"]["shapes_world"] == ""
    m = cell["metrics"]["shapes/replace_rel"]
    assert len(m["items"]) == m["n"] and m["items"].count("1") == m["correct"]
    assert m["accuracy"] == pytest.approx(m["correct"] / m["n"])
    assert [row[0] for row in cell["curve"]] == [2, 4]
    assert not (runs / "dcl__seed0" / "checkpoints").exists() and (runs / "dcl__seed0" / "export").is_dir()

    # 3. The aggregate: intervals, paired tests against the control, table and plots.
    summary = json.loads((results / "summary.json").read_text())
    groups = {g["recipe"]: g for g in summary["groups"]}
    assert groups["clip"]["seeds"] == [0] and summary["missing"] == []
    neg = groups["dcl"]
    items = [[int(c) for c in cells["dcl__seed0"]["metrics"]["shapes/replace_rel"]["items"]]]
    assert neg["metrics"]["shapes/replace_rel"]["mean"] == pytest.approx(np.mean(items))
    vs = neg["vs_control"]["shapes/replace_rel"]
    ctrl = [[int(c) for c in cells["clip__seed0"]["metrics"]["shapes/replace_rel"]["items"]]]
    assert vs["delta"] == pytest.approx(np.mean(items) - np.mean(ctrl))
    # one exact test per seed (the statistics over several seeds are tested by hand above)
    assert vs["mcnemar"][0]["b"] == int(np.sum((np.array(items[0]) == 1) & (np.array(ctrl[0]) == 0)))
    pooled = neg["metrics"]["shapes/pooled"]
    assert pooled["n"] == sum(v["n"] for k, v in cells["dcl__seed0"]["metrics"].items() if k.startswith("shapes/"))
    table = (results / "table.md").read_text()
    assert "## Paired against the control `clip`" in table and "shapes/heldout/replace_rel" in table
    for plot in ("probes.png", "steps.png", "tradeoff.png"):
        assert (results / plot).stat().st_size > 5000

    # 4. Nothing left to do: a rerun trains nothing and rewrites the same aggregate.
    proc = _study(["--config", str(path), "--list"])
    out, _ = proc.communicate(timeout=120)
    assert out.count("done  ") == 3 and "todo" not in out


def test_a_cell_that_cannot_be_evaluated_fails_with_one_message(tmp_path, exported, capsys):
    empty = tmp_path / "probes"
    empty.mkdir()
    body = {
        **BASE,
        "recipes": {"clip": {"config": str(REPO / "configs/clip.yaml")}},
        "evaluate": {"start": str(exported), "probes": {"shapes": str(empty)}},
        "results": str(tmp_path / "results"),
    }
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert vlp_study(["--config", str(_study_file(tmp_path, body))]) == 1
    # The study's handlers last only while its cells run: this process (and what it forks later) gets its
    # own back, or a later SIGTERM would raise KeyboardInterrupt in a DataLoader worker instead of ending it.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    err = capsys.readouterr().err
    assert "cell start: evaluating" in err and f"{empty} holds no SugarCrepe" in err
    assert not (tmp_path / "results" / "cells" / "start.json").exists()


def test_two_processes_share_a_study_through_claims(tmp_path, monkeypatch):
    """A cell held by a live process is skipped by another; the kernel frees the claim of a process
    that ends however it ends (kill -9), and a pid left in a free claim file holds nothing (the pid
    check this replaced skipped such a cell forever once the pid was reused)."""
    from vlp.study.cells import Cell, claim, held_by

    monkeypatch.chdir(REPO)
    study_file = _study_file(tmp_path, {**BASE, "results": str(tmp_path / "results")})
    study = load_study(study_file)
    cell = Cell("clip", 0)
    mine = claim(study, cell)
    assert mine is not None and mine.path.read_text() == str(os.getpid())
    assert claim(study, cell) is None  # held, even by this same process through another open file
    mine.release()
    assert not mine.path.exists()

    take_and_wait = (
        "import time\nfrom vlp.study.cells import Cell, claim\nfrom vlp.study.spec import load_study\n"
        f"held = claim(load_study({str(study_file)!r}), Cell('clip', 0))\n"
        "print(held is not None, flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", take_and_wait], stdout=subprocess.PIPE, text=True, env=environment()
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert claim(study, cell) is None  # a live process holds it
        assert held_by(study, cell) == holder.pid  # what --list shows
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait()
    assert held_by(study, cell) is None  # its lock went with it ...
    again = claim(study, cell)  # ... and the file it left is taken over
    assert again is not None and again.path.read_text() == str(os.getpid())
    again.release()

    mine.path.write_text("1")  # a live pid (init), in a file nobody holds
    taken = claim(study, cell)
    assert taken is not None
    taken.release()


def test_a_claim_file_removed_while_another_process_opened_it_is_not_shared(tmp_path, monkeypatch):
    """The race a lock on a removed file would lose: B opens the claim file; before B locks it, A
    releases it (removing it) and C claims the path's new file; B's lock on the removed file then
    succeeds. claim() must see that its file is no longer the path's and find C holding the cell."""
    import fcntl

    from vlp.study import cells
    from vlp.study.cells import Cell, claim

    monkeypatch.chdir(REPO)
    study = load_study(_study_file(tmp_path, {**BASE, "results": str(tmp_path / "results")}))
    cell = Cell("clip", 0)
    a = claim(study, cell)
    real_flock, held = fcntl.flock, []

    def a_releases_and_c_claims_first(f, op):
        if not held:  # B's first lock attempt: A and C act in between B's open and B's lock
            a.release()
            c_file = open(a.path, "a+")
            real_flock(c_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(c_file)
        return real_flock(f, op)

    monkeypatch.setattr(cells.fcntl, "flock", a_releases_and_c_claims_first)
    assert claim(study, cell) is None  # without the inode check: a Claim on the removed file
    held[0].close()


def test_the_trainer_keeps_the_claim_when_the_study_process_is_gone(tmp_path, monkeypatch):
    """train_cell hands the claim's open file to the trainer (pass_fds): if the vlp-study process dies
    (its file closed, nothing released), the cell stays taken until the trainer ends too."""
    import threading

    import psutil

    from vlp.study import cells
    from vlp.study.cells import Cell, CellFailed, claim, train_cell

    monkeypatch.chdir(REPO)
    study = load_study(_study_file(tmp_path, {**BASE, "results": str(tmp_path / "results")}))
    cell = Cell("clip", 0)
    mine = claim(study, cell)
    marker = f"# trainer of {tmp_path}"  # to tell it from other processes this test session started
    sleeper = [sys.executable, "-c", f"import time; time.sleep(60)  {marker}"]  # a trainer that takes its time
    monkeypatch.setattr(cells, "train_command", lambda *args: sleeper)
    ended = []

    def study_process():
        try:
            train_cell(study, cell, tmp_path / "runs" / cell.name, lambda m: None, (mine.file.fileno(),))
        except CellFailed as exn:
            ended.append(exn)

    thread = threading.Thread(target=study_process)
    thread.start()

    def trainers() -> list[psutil.Process]:
        return [c for c in psutil.Process().children() if marker in " ".join(c.cmdline())]

    deadline = time.monotonic() + 30
    while not trainers() and time.monotonic() < deadline:
        time.sleep(0.05)
    (trainer,) = trainers()
    try:
        mine.file.close()  # the study process is gone: its descriptor closed, the file not removed
        assert claim(study, cell) is None  # the trainer still holds it
    finally:
        trainer.kill()
        thread.join(timeout=30)
    assert ended and "training exited" in str(ended[0])
    again = claim(study, cell)  # the trainer is gone too: the cell is free
    assert again is not None
    again.release()


def test_listing_a_study_does_not_make_a_free_cell_look_taken(tmp_path, monkeypatch):
    """held_by (--list) holds a shared lock for an instant; a claim at that instant retries."""
    import fcntl
    import threading

    from vlp.study.cells import Cell, claim

    monkeypatch.chdir(REPO)
    study = load_study(_study_file(tmp_path, {**BASE, "results": str(tmp_path / "results")}))
    cell = Cell("clip", 0)
    claim(study, cell).release()  # the folder and a free claim file's path
    path = tmp_path / "results" / "cells" / "clip__seed0.running"
    lister = open(path, "a+")
    fcntl.flock(lister, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.08, lister.close).start()  # held briefly, as held_by does
    taken = claim(study, cell)
    assert taken is not None
    taken.release()


def test_a_file_system_without_locks_is_one_message(tmp_path, monkeypatch, capsys):
    import errno

    from vlp.study import cells

    def no_locks(f, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(cells.fcntl, "flock", no_locks)
    body = {**BASE, "evaluate": {"zeroshot": {"test": f"{tmp_path}:test"}}, "results": str(tmp_path / "results")}
    assert vlp_study(["--config", str(_study_file(tmp_path, body)), "--max-cells", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot take the claim" in err and "clip__seed0.running" in err and "No locks available" in err
    assert not list((tmp_path / "results" / "cells").glob("*.json"))  # nothing ran
