"""The trainer end to end: 2-process DeepSpeed ZeRO-2 on CPU against one process with twice the
batch, exact resume, SIGTERM, non-finite steps, and the export as open_clip sees it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch

from tests.fault_hooks import environment
from tests.runs import (
    REPO,
    free_port,
    launch_cmd,
    machine_cmds,
    max_diff,
    metrics,
    run,
    run_together,
    train_cmd,
    weights,
)
from vlp.checkpoint import list_checkpoints, verify_checkpoint

pytestmark = pytest.mark.slow
MAX_STEPS = 12
SAVE_EVERY = 4  # checkpoints at 4, 8, 12: each is about 200 MB (weights and Adam states)


def common(shards: Path, out: Path) -> list[str]:
    return [
        f"output_dir={out}",
        f"data.train={shards}",
        "data.workers=0",
        "data.shuffle_buffer=0",
        "train.batch_size=8",
        f"train.max_steps={MAX_STEPS}",
        "train.lr=2e-3",
        "train.warmup_steps=2",
        "train.precision=fp32",
        "train.log_every=1",
        f"train.save_every={SAVE_EVERY}",
        "train.keep_last=3",
        "train.threads=1",
        # BatchNorm-free: with the ResNet tower each rank normalises with its own batch statistics,
        # so 2 x 8 could not equal 1 x 16 exactly (as in open_clip without SyncBatchNorm).
        f"model.name={REPO / 'configs/models/vlp-tiny-vit.json'}",
    ]


@pytest.fixture(scope="module")
def zero2_run(train_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zero2") / "run"
    zeroshot = train_shards.parent / "zeroshot"
    evals = [f"eval.zeroshot=[{zeroshot}:test, {zeroshot}:heldout]", "eval.batch_size=7"]
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", [*common(train_shards, out), *evals]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "DeepSpeed ZeRO-2, 2 process(es)" in proc.stdout
    return out


def test_zero2_run_completes_checkpoints_and_exports(zero2_run):
    steps = [s for s, _ in list_checkpoints(zero2_run)]
    assert steps == list(range(SAVE_EVERY, MAX_STEPS + 1, SAVE_EVERY))
    for record in metrics(zero2_run).values():  # what a user reads to see a data-bound run
        assert 0 <= record["data_share"] <= 1 and record["data_share"] == record["data_time"] / record["step_time"]
        assert record["loader_images_per_core_s"] > 0
    assert sorted(metrics(zero2_run)) == list(range(1, MAX_STEPS + 1))
    summary = json.loads((zero2_run / "summary.json").read_text())
    assert summary["steps"] == MAX_STEPS and summary["skipped_steps"] == 0
    # The export is an open_clip local dir, and it holds the trainer's final weights.
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{zero2_run / 'export'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{zero2_run / 'export'}")
    assert model.logit_scale.ndim == 0  # open_clip's default layout
    trained = weights(zero2_run / "checkpoints" / f"step_{MAX_STEPS}")
    exported = {k: v.reshape(trained[k].shape) for k, v in model.state_dict().items()}
    assert max_diff(trained, exported) == 0.0
    from vlp.config import ModelConfig
    from vlp.model import build_model

    ours = build_model(ModelConfig(name=str(REPO / "configs/models/vlp-tiny-vit.json"))).model
    ours.load_state_dict(trained)
    ours.eval()
    model.eval()
    from PIL import Image

    images = torch.stack([preprocess(Image.new("RGB", (64, 64), c)) for c in ((200, 30, 30), (30, 30, 200))])
    texts = tokenizer(["a red circle", "a blue square to the left of a green star"])
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), model.encode_image(images), atol=1e-6)
        assert torch.allclose(ours.encode_text(texts), model.encode_text(texts), atol=1e-6)


def test_evaluation_during_training_splits_ranks_and_matches_the_evaluator(zero2_run, train_shards, tmp_path):
    from eval_zeroshot.cli import main as vlp_eval

    during = {r["dataset"]: r["metrics"] for r in json.loads((zero2_run / "summary.json").read_text())["eval"]}
    assert set(during) == {"zeroshot:test", "zeroshot:heldout"}
    logged = [json.loads(line) for line in (zero2_run / "eval.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in logged] == [MAX_STEPS]
    for split in ("test", "heldout"):
        out = tmp_path / f"{split}.json"
        args = [
            "zeroshot",
            "--model",
            f"local-dir:{zero2_run / 'export'}",
            "--dataset",
            str(train_shards.parent / "zeroshot"),
            "--split",
            split,
            "--out",
            str(out),
        ]
        assert vlp_eval(args) == 0
        after = json.loads(out.read_text())["results"][0]["metrics"]
        for name, value in after.items():
            assert during[f"zeroshot:{split}"][name] == pytest.approx(value, abs=1e-6), (split, name)


@pytest.fixture(scope="module")
def single_run(train_shards, tmp_path_factory) -> Path:
    """1 x 16: one process, no launcher."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = run(train_cmd([*common(train_shards, out), "train.batch_size=16"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


@pytest.fixture(scope="module")
def ddp_run(train_shards, tmp_path_factory) -> Path:
    """2 x 8 under plain DDP: the other distributed path through the same code."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = run(launch_cmd("cpu_ddp.yaml", common(train_shards, out)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def same_losses(ref: Path, got: Path, steps: range, tol: float = 1e-5) -> None:
    a, b = metrics(ref), metrics(got)
    assert sorted(b) == list(steps), sorted(b)
    for step in steps:
        assert abs(a[step]["loss"] - b[step]["loss"]) <= tol, (step, a[step]["loss"], b[step]["loss"])


@pytest.mark.parametrize("how", ["single", "ddp"])
def test_two_ranks_match_one_rank_with_twice_the_batch(zero2_run, single_run, ddp_run, how):
    """The global data order gives 2 x 8 and 1 x 16 the same samples in every step (not only while the
    shards happen to line up), so the whole run matches."""
    out = single_run if how == "single" else ddp_run
    same_losses(zero2_run, out, range(1, MAX_STEPS + 1))
    first = f"step_{SAVE_EVERY}"
    diff = max_diff(weights(zero2_run / "checkpoints" / first), weights(out / "checkpoints" / first))
    assert diff < 1e-5, diff  # measured: 2.1e-6 single, 4.4e-6 DDP


@pytest.mark.parametrize("direction", ["2x8->1x16", "1x16->2x8"])
def test_a_ddp_checkpoint_continues_on_another_number_of_ranks(single_run, ddp_run, train_shards, tmp_path, direction):
    """Resume anywhere (DDP needs no conversion): the losses after the resume equal the uninterrupted run's
    to the reduction-order tolerance of 1e-5 (ViT towers, no BatchNorm; fp32)."""
    out = tmp_path / "resumed"
    if direction == "2x8->1x16":
        ckpt = ddp_run / "checkpoints" / f"step_{SAVE_EVERY}"
        cmd = train_cmd([*common(train_shards, out), "train.batch_size=16", f"train.resume={ckpt}"])
    else:
        ckpt = single_run / "checkpoints" / f"step_{SAVE_EVERY}"
        cmd = launch_cmd("cpu_ddp.yaml", [*common(train_shards, out), f"train.resume={ckpt}"])
    proc = run(cmd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "the same global batch of 16, the same run" in proc.stdout
    same_losses(single_run, out, range(SAVE_EVERY + 1, MAX_STEPS + 1))


@pytest.mark.scale  # make scale (CI runs it after make test)
def test_another_global_batch_continues_counted_in_samples(ddp_run, train_shards, tmp_path):
    """2 x 8 (global 16) at step 4 -> 1 x 32: allowed, with one message saying what changes; the run
    then ends after the same number of samples (12 x 16 = 6 x 32)."""
    out = tmp_path / "resumed"
    ckpt = ddp_run / "checkpoints" / f"step_{SAVE_EVERY}"
    proc = run(train_cmd([*common(train_shards, out), "train.batch_size=32", f"train.resume={ckpt}"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(ln for ln in proc.stdout.splitlines() if "the schedule is counted in samples" in ln)
    assert "global batch 16 (2 ranks x 8 x 1 accumulated) -> 32 (1 ranks x 32 x 1 accumulated)" in line
    assert "64 samples trained on: step 4 continues as step 2" in line
    assert f"train.max_steps {MAX_STEPS} -> 6" in line and "train.warmup_steps 2 -> 1" in line
    assert sorted(metrics(out)) == [3, 4, 5, 6]
    assert json.loads((out / "checkpoints" / "step_6" / "loader.json").read_text())["position"] == 12 * 16


@pytest.fixture(scope="module")
def zero2_single_run(train_shards, tmp_path_factory) -> Path:
    """1 x 16 under DeepSpeed ZeRO-2 (one process)."""
    out = tmp_path_factory.mktemp("zero2_single") / "run"
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", [*common(train_shards, out), "train.batch_size=16"], processes=1))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


@pytest.mark.parametrize("direction", ["2x8->1x16", "1x16->2x8"])
def test_a_zero2_checkpoint_continues_on_another_number_of_ranks_through_a_universal_checkpoint(
    zero2_run, zero2_single_run, train_shards, tmp_path, direction
):
    """ZeRO-2's optimizer state is split per rank: on another world size the checkpoint is converted once
    to DeepSpeed's universal checkpoint (<checkpoint>/universal, with its own manifest) and re-partitioned;
    the losses after the resume equal the uninterrupted run's (<= 1e-5, fp32)."""
    source = zero2_run if direction == "2x8->1x16" else zero2_single_run
    ckpt = tmp_path / "step_4"
    shutil.copytree(source / "checkpoints" / f"step_{SAVE_EVERY}", ckpt)  # the fixture's stays unconverted
    out = tmp_path / "resumed"
    shape = (["train.batch_size=16"], 1) if direction == "2x8->1x16" else ([], None)
    proc = run(
        launch_cmd(
            "cpu_deepspeed_zero2.yaml",
            [*common(train_shards, out), *shape[0], f"train.resume={ckpt}"],
            processes=shape[1],
        )
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "converting it to DeepSpeed's universal checkpoint" in proc.stdout
    verify_checkpoint(ckpt / "universal")
    same_losses(zero2_run, out, range(SAVE_EVERY + 1, MAX_STEPS + 1))


KILL_DURING_CONVERSION = """
import os, sys, threading, time
from pathlib import Path
from deepspeed.checkpoint import ds_to_universal
from vlp.train.reshard import to_universal
real = ds_to_universal.main
def slow(args):  # the conversion runs, then is killed (-9) before it is sealed
    real(args)
    Path(sys.argv[2]).write_text("converted")
    time.sleep(600)
ds_to_universal.main = slow
to_universal(sys.argv[1])
"""


def test_the_universal_conversion_survives_a_kill_and_happens_once(zero2_run, tmp_path):
    ckpt = tmp_path / "step_4"
    shutil.copytree(zero2_run / "checkpoints" / f"step_{SAVE_EVERY}", ckpt)
    flag = tmp_path / "converted"
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_CONVERSION, str(ckpt), str(flag)], cwd=REPO)
    deadline = time.time() + 240
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert flag.exists(), "the conversion did not run"
    proc.kill()
    proc.wait()
    assert not (ckpt / "universal").exists()  # nothing half-made under the final name
    assert list(ckpt.glob(".universal-*.partial"))  # the leftover, removed by the next attempt
    verify_checkpoint(ckpt)  # the checkpoint itself is untouched
    from vlp.train import reshard

    final = reshard.to_universal(ckpt)
    assert final == ckpt / "universal" and not list(ckpt.glob(".universal-*.partial"))
    verify_checkpoint(final)
    sealed = (final / "manifest.json").stat().st_mtime_ns
    assert reshard.to_universal(ckpt) == final  # once: the next resume reuses it
    assert (final / "manifest.json").stat().st_mtime_ns == sealed


def test_two_machines_on_localhost_match_one_machine_and_their_checkpoint_resumes(zero2_run, train_shards, tmp_path):
    """Two `accelerate launch` processes as machine ranks 0 and 1 (the multinode launcher of
    launch/slurm.sh, over TCP on 127.0.0.1) train exactly as one machine with 2 processes; a
    checkpoint of theirs continues on one machine."""
    out = tmp_path / "two_machines"
    procs = run_together(machine_cmds("cpu_multinode_zero2.yaml", common(train_shards, out)))
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "DeepSpeed ZeRO-2, 2 process(es)" in procs[0].stdout
    ref, got = metrics(zero2_run), metrics(out)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in got:
        assert abs(ref[step]["loss"] - got[step]["loss"]) <= 1e-5, (step, ref[step]["loss"], got[step]["loss"])
    resumed = tmp_path / "resumed_on_one_machine"
    ckpt = out / "checkpoints" / f"step_{2 * SAVE_EVERY}"
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", [*common(train_shards, resumed), f"train.resume={ckpt}"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    got = metrics(resumed)
    assert sorted(got) == list(range(2 * SAVE_EVERY + 1, MAX_STEPS + 1))
    for step in got:
        assert abs(ref[step]["loss"] - got[step]["loss"]) <= 1e-5, step


FAKE_SRUN = r"""#!/usr/bin/env bash
# A fake srun: the job step's command once per node ($SLURM_NNODES), each a local process with its own
# SLURM_NODEID, as slurmstepd starts tasks; SIGTERM (SLURM's --signal) is passed on to every task.
while [[ "$1" == --* ]]; do shift; done
echo $$ > "$FAKE_SRUN_PID"  # SLURM signals the job step, not the batch script: the test signals this
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do
    while :; do
        wait "$pid"; code=$?
        kill -0 "$pid" 2>/dev/null || break  # a trapped signal interrupts wait: wait again
    done
    [ "$code" -ne 0 ] && status=$code
done
exit $status
"""


@pytest.mark.scale  # make scale (CI runs it after make test)
def test_slurm_script_runs_two_nodes_survives_preemption_and_the_requeued_job_continues(
    zero2_run, train_shards, tmp_path
):
    """launch/slurm.sh for real under a fake srun/scontrol: two "nodes" on 127.0.0.1 (the CPU copy of
    the multinode config), a SIGTERM as SLURM's --signal sends it, a checkpoint, then the requeued job
    (the same command) continues to the end with the losses of the uninterrupted one-machine run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", FAKE_SRUN), ("scontrol", "#!/usr/bin/env bash\necho 127.0.0.1\necho 127.0.0.1\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "slurm"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {out}\n")  # everything else from the overrides, as zero2_run
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(os.sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NNODES": "2",
        "GPUS_PER_NODE": "1",
        "VLP_LAUNCH_CONFIG": "launch/accelerate/cpu_multinode_zero2.yaml",
        "MASTER_PORT": str(free_port()),
        "FAKE_SRUN_PID": str(tmp_path / "srun.pid"),
    }
    cmd = ["bash", str(REPO / "launch/slurm.sh"), str(recipe), *common(train_shards, out), "train.save_every=100"]
    job = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**environment(step_sleep=0.5), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3:
            break
        time.sleep(0.2)
    assert job.poll() is None, "the job ended before it could be preempted"
    os.kill(int((tmp_path / "srun.pid").read_text()), signal.SIGTERM)  # as --signal=TERM@120 does
    output, _ = job.communicate(timeout=180)
    assert "stopped by a signal" in output, output[-4000:]
    ((stopped_at, _),) = list_checkpoints(out)
    assert 3 <= stopped_at < MAX_STEPS and max(metrics(out)) == stopped_at
    env["MASTER_PORT"] = str(free_port())
    requeued = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert requeued.returncode == 0, requeued.stdout[-3000:] + requeued.stderr[-5000:]
    assert f"resuming from {out / 'checkpoints' / f'step_{stopped_at}'}" in requeued.stdout
    ref, got = metrics(zero2_run), metrics(out)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in got:
        assert abs(ref[step]["loss"] - got[step]["loss"]) <= 1e-5, step


def test_resume_from_step_k_logs_the_same_losses(zero2_run, train_shards, tmp_path):
    out = tmp_path / "resumed"  # another output_dir
    ckpt = zero2_run / "checkpoints" / f"step_{SAVE_EVERY}"
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", [*common(train_shards, out), f"train.resume={ckpt}"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ref, got = metrics(zero2_run), metrics(out)
    assert sorted(got) == list(range(SAVE_EVERY + 1, MAX_STEPS + 1))
    for step in got:
        assert abs(ref[step]["loss"] - got[step]["loss"]) <= 1e-6, (step, ref[step]["loss"], got[step]["loss"])
        assert ref[step]["lr"] == got[step]["lr"]


def test_sigterm_saves_at_the_step_boundary_and_resume_continues(zero2_run, train_shards, tmp_path):
    out = tmp_path / "preempted"
    overrides = [*common(train_shards, out), "train.save_every=100"]
    proc = subprocess.Popen(
        launch_cmd("cpu_deepspeed_zero2.yaml", overrides),
        cwd=REPO,
        env=environment(step_sleep=0.5),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGTERM)  # as a cluster or Ctrl-C does: the whole process group
    output, _ = proc.communicate(timeout=120)
    assert "stopped by a signal" in output, output[-4000:]
    ((stopped_at, ckpt),) = list_checkpoints(out)
    assert 3 <= stopped_at < MAX_STEPS and max(metrics(out)) == stopped_at
    resumed = run(launch_cmd("cpu_deepspeed_zero2.yaml", [*common(train_shards, out), "train.resume=latest"]))
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    ref, got = metrics(zero2_run), metrics(out)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in range(1, MAX_STEPS + 1):
        assert abs(ref[step]["loss"] - got[step]["loss"]) <= 1e-6, step


def test_nonfinite_steps_never_reach_the_weights(train_shards, tmp_path):
    out = tmp_path / "nan"
    overrides = [*common(train_shards, out), "train.max_nonfinite_steps=3", "train.save_every=1", "train.keep_last=10"]
    faults = environment(nonfinite_loss_steps=[2, 5, 6, 7], nonfinite_grad_steps=[3])
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", overrides), env=faults)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the contract: 1 = the run failed
    assert "3 steps in a row had a non-finite loss or gradient" in proc.stderr + proc.stdout
    assert "The last good checkpoint is step_6" in proc.stderr + proc.stdout
    steps = [s for s, _ in list_checkpoints(out)]
    assert steps == [1, 2, 3, 4, 5, 6]
    w = {s: weights(out / "checkpoints" / f"step_{s}") for s in steps}
    assert max_diff(w[1], w[2]) == 0.0  # non-finite loss at step 2: skipped
    assert max_diff(w[2], w[3]) == 0.0  # non-finite gradient at step 3: skipped by the optimizer
    assert max_diff(w[3], w[4]) > 0.0  # step 4 trains
    assert max_diff(w[4], w[6]) == 0.0
    assert all(torch.isfinite(v).all() for v in w[6].values())
    logged = metrics(out)
    assert logged[3]["skipped_steps"] == 2 and logged[6]["skipped_steps"] == 4


def test_bf16_zero2_clamps_the_logit_scale_in_the_master_weights(train_shards, tmp_path):
    """bf16 under ZeRO-2 with the demo's ResNet tower (BatchNorm buffers must follow the parameters to
    bf16), given inline with a logit scale that starts above ln 100: the clamp must hold in
    DeepSpeed's fp32 master copy, or the next step would undo it."""
    arch = json.loads((REPO / "configs/models/vlp-tiny.json").read_text())
    arch["init_logit_scale"] = 5.0  # exp(5) = 148
    out = tmp_path / "bf16"
    overrides = [
        *common(train_shards, out),
        "train.precision=bf16",
        "train.max_steps=4",
        "train.save_every=4",
        "model.name=tiny-inline",
        f"model.arch={json.dumps(arch)}",
    ]
    proc = run(launch_cmd("cpu_deepspeed_zero2.yaml", overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "precision bf16" in proc.stdout
    scales = [r["logit_scale"] for r in metrics(out).values()]
    # logged: the scale each step used; the first step starts above the bound, every later one within it
    assert len(scales) == 4 and scales[0] > 140 and all(s <= 100.0 + 1e-3 for s in scales[1:]), scales
    master = weights(out / "checkpoints" / "step_4")["logit_scale"]
    assert 4.55 < master.item() <= 4.6052  # unclamped it would be about 5


def test_zero3_trains_exports_and_matches_zero2(zero2_run, train_shards, tmp_path):
    """Parameters partitioned too (the [1]-shaped logit scale lives on one rank): same first step."""
    out = tmp_path / "zero3"
    overrides = [*common(train_shards, out), "train.max_steps=12", "train.save_every=100"]
    proc = run(launch_cmd("cpu_deepspeed_zero3.yaml", overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "DeepSpeed ZeRO-3, 2 process(es)" in proc.stdout
    ref, got = metrics(zero2_run), metrics(out)
    for step in (1, 2):
        assert abs(ref[step]["loss"] - got[step]["loss"]) < 1e-5
    assert all(r["logit_scale"] <= 100.0 for r in got.values())
    # The export reassembles ZeRO-3's partitions: open_clip loads exactly the final weights.
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out / 'export'}")
    trained = weights(out / "checkpoints" / f"step_{MAX_STEPS}")
    assert max_diff(trained, {k: v.reshape(trained[k].shape) for k, v in model.state_dict().items()}) == 0.0
