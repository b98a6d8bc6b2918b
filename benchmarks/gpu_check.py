"""The GPU check: vlp's trainer under accelerate (DDP and DeepSpeed ZeRO-2, each with the CPU "fast"
JPEG decoder and the on-device decoder) against open_clip's own trainer, on one GPU, same model, same
images, same batch, bf16.

For each configuration it reports samples/s (median over the steps after a warm-up), MFU, peak memory
and the data_time share (median time blocked on the loader / median step time), and writes
``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.

* FLOPs: 3 x the forward FLOPs of one sample (image + text tower), counted by open_clip's own profiler
  functions (``open_clip_train.profiler.profile_torch*``: torch.utils.flop_counter.FlopCounterMode on a
  batch of one, image at the model's size, text at its context length); the loss is not counted.
* Peak: from the device name (bf16 dense tensor-core TFLOP/s, a small table below) or ``--peak-tflops``;
  an unknown device or the CPU gives MFU null.
* Data: ``--data DIR`` (webdataset shards of JPEG + .txt), or a corpus made with ``vlp-data photos``.
  open_clip's trainer 3.3 cannot read webdataset shards with webdataset >= 0.2.96, so it reads the same
  JPEGs extracted to files, from a CSV (``--dataset-type csv``), repeated to exactly --steps batches.
* data_time: vlp logs the time its loop waits in ``next(loader)``; for open_clip's trainer the same
  wait is measured by wrapping its training DataLoader (its own "Data (t)" also holds the host sync of
  the previous step's log line, so it is kept only as ``data_time_share_logged``).
* Every run has a timeout (its process group is killed) and the whole check a budget (``--budget-s``,
  8 minutes by default): a configuration that does not fit is recorded as skipped, not waited for.

After those, the hot loop (issue: no host sync and no collective beyond the engine's on a step that
neither logs, evaluates nor saves):

* ``hot loop``: vlp ZeRO-2 with one process group initialised over NCCL (DeepSpeed initialises it even
  for one process: the setup that, read against the libraries, crashed before collectives moved to the
  device), logging only at the first and last steps, under ``torch.cuda.set_sync_debug_mode("warn")``:
  every synchronising CUDA call is counted per step and charged to its caller (the engine, the loss,
  the loader or the trainer), and steps/s is measured between the first and the last step's records;
  set against the same rate of the ZeRO-2 run above, which logs (and so syncs) every step.
* ``2 ranks``: where more than one GPU is present, vlp ZeRO-2 on two of them (NCCL across devices).

``--dry-run`` runs the same code on the CPU (GPUs hidden) with the tiny ViT (configs/models/
vlp-tiny-vit.json, 64 px), 4 steps of batch 8 in fp32 and three configurations (vlp DDP with the first
decoder, vlp ZeRO-2 with the last, and open_clip), so that the check is known to work before a GPU is lent.

Usage:
  python benchmarks/gpu_check.py --data /data/photos_shards            # on one GPU (<= 8 minutes)
  python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check        # on the CPU, a few minutes
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched in order against torch's device name:
# the more specific names first (an "H100 PCIe" is not an SXM H100).
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.2),
    ("A6000", 154.8),
]
# open_clip's docs/model_profile.csv (forward GFLOPs per sample), to cross-check the count made here.
OPEN_CLIP_TABLE_GFLOPS = {"ViT-B-32": {"gflops": 14.78, "image_gflops": 8.82, "text_gflops": 5.96}}

# The configurations: (name, trainer, backend); vlp ones run once per decoder.
BACKENDS = {"ddp": ("DDP", "ddp"), "zero2": ("ZeRO-2", "zero2")}
# Runs after the comparison: (label, processes, sync audit with quiet logging), all under ZeRO-2.
EXTRA_RUNS = {"hot_loop": ("ZeRO-2 hot loop, sync audit", 1, True), "zero2x2": ("ZeRO-2, 2 ranks", 2, False)}
LAUNCH_CONFIGS = {
    ("ddp", "gpu"): "gpu_ddp.yaml",
    ("zero2", "gpu"): "gpu_zero2.yaml",
    ("ddp", "cpu"): "cpu_ddp.yaml",
    ("zero2", "cpu"): "cpu_deepspeed_zero2.yaml",
}

# open_clip's trainer, run as is; the wrapper only times its loader and reads its peak memory.
OPEN_CLIP_PEER = r'''
import json, resource, sys, time
import open_clip, torch
arch, record_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if arch.endswith(".json"):
    open_clip.add_model_config(arch)  # open_clip's trainer only knows registered model names
import open_clip_train.main as main_module

waits = []

class TimedLoader:
    """open_clip's DataLoader, timing each next(): the wait vlp logs as data_time."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return len(self._loader)

    def __iter__(self):
        it = iter(self._loader)
        while True:
            tic = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            waits.append(time.perf_counter() - tic)
            yield batch

get_data = main_module.get_data

def timed_get_data(*args, **kwargs):
    data = get_data(*args, **kwargs)
    if "train" in data:
        data["train"].dataloader = TimedLoader(data["train"].dataloader)
    return data

main_module.get_data = timed_get_data
try:
    main_module.main(argv)
finally:
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(record_path, "w") as f:
        json.dump({"loader_wait_s": waits, "peak_memory_mb": peak}, f)
'''
# The hot loop's sync audit, loaded by the trainer through VLP_TRAIN_HOOKS (vlp/train/hooks.py).
SYNC_AUDIT = r'''
import json, os, sys, warnings
from collections import Counter, defaultdict
import torch
from vlp.train.hooks import TrainHooks

ENGINE = ("deepspeed/", "accelerate/", "torch/autograd/", "torch/optim/")


def owner(frame):
    """Who asked for the sync: walking out from the call, the loss, the loader or the engine when one
    of their frames comes first, else the trainer (its innermost vlp line), else other."""
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if "/vlp/objectives/" in path:
            return "loss", None
        if "/data_pipelines/" in path:
            return "data", None
        if any(part in path for part in ENGINE):
            return "engine", None
        if "/vlp/" in path:
            return "trainer", f"{path.rsplit('/vlp/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "other", None


class SyncAudit(TrainHooks):
    def __init__(self):
        self.step, self.counts, self.where = 0, defaultdict(Counter), Counter()
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.set_sync_debug_mode("warn")
            warnings.simplefilter("always", UserWarning)
            shown = warnings.showwarning

            def count(message, category, filename, lineno, file=None, line=None):
                if "synchroniz" not in str(message):
                    return shown(message, category, filename, lineno, file, line)
                who, where = owner(sys._getframe(1))
                self.counts[self.step][who] += 1
                if where:
                    self.where[where] += 1

            warnings.showwarning = count

    def loss(self, step, loss):
        self.step = step
        return loss


def write(audit, path):
    state = {"cuda": audit.cuda, "per_step": {str(k): dict(v) for k, v in sorted(audit.counts.items())},
             "trainer_sites": dict(audit.where.most_common(20))}
    with open(path, "w") as f:
        json.dump(state, f)


class Audit(SyncAudit):
    def __init__(self):
        super().__init__()
        import atexit
        if int(os.environ.get("RANK", "0")) == 0:
            atexit.register(write, self, os.environ["VLP_SYNC_AUDIT_OUT"])
'''

OPEN_CLIP_STEP = re.compile(r"Data \(t\): ([0-9.]+) Batch \(t\): ([0-9.]+), ([0-9.eE+]+)/s")


class CheckError(RuntimeError):
    """The check cannot go on (no corpus, no data); the message says what to do."""


# ---------------------------------------------------------------------------------------------- plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dry-run", action="store_true", help="CPU only (GPUs hidden), tiny model, a few steps")
    p.add_argument(
        "--data", default=None, help="directory of webdataset shards (JPEG + .txt); default: made with vlp-data photos"
    )
    p.add_argument(
        "--out", default=None, help=f"results folder (default {DEFAULT_OUT.relative_to(REPO)}/; dry run: a temp dir)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="open_clip name or JSON arch (default ViT-B-32; dry run configs/models/vlp-tiny-vit.json)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 60; dry run 4)")
    p.add_argument(
        "--warmup", type=int, default=None, help="first steps left out of the medians (default 10; dry run 1)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="per GPU (default 256; dry run 8)")
    p.add_argument("--workers", type=int, default=None, help="loader workers, both trainers (default 8; dry run 1)")
    p.add_argument(
        "--precision",
        default=None,
        choices=["bf16", "fp32"],
        help="vlp's train.precision, open_clip's amp_bf16 / fp32 (default bf16; dry run fp32)",
    )
    p.add_argument("--decoders", default="fast,device", help="vlp's data.decoder values (GPU decode path off, on)")
    p.add_argument(
        "--runs",
        default=None,
        help="comma-separated configurations: BACKEND:DECODER (ddp, zero2) or open_clip "
        "(default: open_clip and every backend x decoder; dry run: open_clip,ddp:<first decoder>,zero2:<last>)",
    )
    p.add_argument("--corpus-n", type=int, default=None, help="images vlp-data photos makes (default 4096; dry run 64)")
    p.add_argument("--corpus-size", default=None, help="their size, WxH or N (default 640x480; dry run 256)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's bf16 dense peak (default: from its name)"
    )
    p.add_argument("--run-timeout-s", type=float, default=None, help="one run's limit (default 150; dry run 300)")
    p.add_argument("--budget-s", type=float, default=None, help="the whole check's limit (default 480; dry run 900)")
    p.add_argument(
        "--vlp-set", action="append", default=[], metavar="KEY=VALUE", help="extra vlp override (repeatable)"
    )
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (corpus, run folders, logs)")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="devices for the 2-rank run (default: torch.cuda.device_count(); dry run 2)",
    )
    args = p.parse_args(argv)
    dry = args.dry_run
    defaults = {
        "model": str(REPO / "configs/models/vlp-tiny-vit.json") if dry else "ViT-B-32",
        "steps": 4 if dry else 60,
        "warmup": 1 if dry else 10,
        "batch_size": 8 if dry else 256,
        "workers": 1 if dry else 8,
        "corpus_n": 64 if dry else 4096,
        "corpus_size": "256" if dry else "640x480",
        "precision": "fp32" if dry else "bf16",
        "run_timeout_s": 300.0 if dry else 150.0,
        "budget_s": 900.0 if dry else 480.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.gpus is None:
        if dry:
            args.gpus = 2  # the 2-rank run on 2 CPU processes, so that the dry run covers it
        else:
            import torch

            args.gpus = torch.cuda.device_count()
    if args.warmup >= args.steps:
        p.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")
    return args


def decoder_key_exists() -> bool:
    """Whether this vlp knows data.decoder (the config rejects unknown keys)."""
    from vlp.config.schema import DataConfig

    return "decoder" in DataConfig.__dataclass_fields__


def plan_runs(args: argparse.Namespace, notes: list[str]) -> list[dict]:
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    if not decoder_key_exists():
        notes.append(
            "this vlp has no data.decoder key: each vlp configuration ran once with its loader's default "
            f"decoder (asked for: {', '.join(decoders)})"
        )
        decoders = [None]
    if args.runs:
        wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    elif args.dry_run:
        wanted = ["open_clip", f"ddp:{decoders[0]}", f"zero2:{decoders[-1]}"]
        notes.append("dry run: 3 configurations (open_clip, vlp DDP, vlp ZeRO-2) instead of every backend x decoder")
    else:  # the peer first: were the budget to run out, the ratios still have their denominator
        wanted = ["open_clip"] + [f"{b}:{d}" for b in BACKENDS for d in decoders]
    if not args.runs:
        # the decoder of a ZeRO-2 run above, whose steps/s logging every step it is set against
        decoder = decoders[-1] if args.dry_run else decoders[0]
        wanted.append(f"hot_loop:{decoder}")
        if args.gpus > 1:
            wanted.append(f"zero2x2:{decoder}")
        else:
            notes.append("one device: the 2-rank run needs two GPUs and was not planned")
    runs = []
    for item in wanted:
        if item == "open_clip":
            runs.append(
                {
                    "name": "open_clip trainer",
                    "trainer": "open_clip",
                    "backend": "single process",
                    "decoder": "PIL (its own)",
                }
            )
            continue
        backend, _, decoder = item.partition(":")
        if backend not in BACKENDS and backend not in EXTRA_RUNS:
            raise CheckError(
                f"unknown configuration {item!r}: use ddp:DECODER, zero2:DECODER, hot_loop:DECODER, "
                "zero2x2:DECODER or open_clip"
            )
        decoder = None if decoder in ("", "None", "default") or decoders == [None] else decoder
        label, processes, audit = EXTRA_RUNS.get(backend, (BACKENDS.get(backend, ("",))[0], 1, False))
        runs.append(
            {
                "name": f"vlp {label} ({decoder or 'default decoder'})",
                "trainer": "vlp",
                "backend": "zero2" if backend in EXTRA_RUNS else backend,
                "decoder": decoder,
                "processes": processes,
                "audit": audit,
            }
        )
    return runs


# ---------------------------------------------------------------------------------------------- device


def device_info(args: argparse.Namespace) -> dict:
    if args.dry_run:
        name = "cpu"
    else:
        import torch

        if not torch.cuda.is_available():
            raise CheckError("no CUDA device here: run with --dry-run on a CPU machine")
        name = torch.cuda.get_device_name(0)
    peak, source = peak_tflops(name, args.peak_tflops)
    return {"name": name, "kind": "cpu" if args.dry_run else "gpu", "peak_tflops": peak, "peak_source": source}


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern.lower() in device_name.lower():
            return tflops, f"table: {pattern} bf16 dense"
    return None, f"no peak known for {device_name!r}: MFU not computed (pass --peak-tflops)"


def count_flops(model_name: str) -> dict:
    """Forward FLOPs of one sample with open_clip's profiler functions (on the CPU)."""
    import open_clip
    import open_clip_train.profiler as profiler
    from torch.utils.flop_counter import FlopCounterMode

    # Its profiler counts with FlopCounterMode(), whose default display=True prints a table that needs
    # the optional `tabulate` package: count silently, the same numbers.
    profiler.FlopCounterMode = functools.partial(FlopCounterMode, display=False)
    name = model_name
    if model_name.endswith(".json"):
        open_clip.add_model_config(model_name)
        name = Path(model_name).stem
    model = open_clip.create_model(name, force_custom_text=True, pretrained_hf=False).eval()  # as its profiler
    size = model.visual.image_size
    size = tuple(size[-2:]) if isinstance(size, (tuple, list)) else (size, size)
    image_input = (3, *size)
    text_input = (model.context_length,)
    total = profiler.profile_torch(model, text_input_size=text_input, image_input_size=image_input)
    image = profiler.profile_torch_image(model.visual, image_input_size=image_input)
    text = profiler.profile_torch_text(model.text, text_input_size=text_input)
    result = {
        "model": name,
        "image_size": list(size),
        "context_length": model.context_length,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "forward_gflops": round(total / 1e9, 4),
        "image_forward_gflops": round(image / 1e9, 4),
        "text_forward_gflops": round(text / 1e9, 4),
        "train_gflops_per_sample": round(3 * total / 1e9, 4),
        "source": "open_clip_train.profiler.profile_torch / profile_torch_image / profile_torch_text "
        "(torch.utils.flop_counter.FlopCounterMode, batch 1, torch.ones inputs); train = 3 x forward, loss not counted",
    }
    if name in OPEN_CLIP_TABLE_GFLOPS:
        result["open_clip_docs_table"] = {**OPEN_CLIP_TABLE_GFLOPS[name], "source": "open_clip docs/model_profile.csv"}
    return result


# ---------------------------------------------------------------------------------------------- data


def shard_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def make_corpus(args: argparse.Namespace, out: Path, timeout: float) -> dict:
    """A corpus made with ``vlp-data photos``; a clear error where this checkout lacks the command."""
    exe = str(BIN / "vlp-data")
    probe = subprocess.run([exe, "photos", "--help"], capture_output=True, text=True, cwd=REPO)
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        raise CheckError(
            f"`vlp-data photos` is not available in this checkout ({said[-1] if said else 'no output'}): "
            "pass --data DIR, a directory of webdataset shards holding JPEG images and .txt captions"
        )
    cmd = [exe, "photos", "--out", str(out), "--n", str(args.corpus_n), "--size", args.corpus_size]
    if "--shard-size" in probe.stdout:
        # at least two shards per loader worker, so that no worker idles
        cmd += ["--shard-size", str(max(1, args.corpus_n // (2 * max(1, args.workers))))]
    if "--workers" in probe.stdout:
        cmd += ["--workers", str(min(16, os.cpu_count() or 1))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if proc.returncode != 0:
        raise CheckError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return {"created_with": " ".join(cmd[1:])}


def csv_from_shards(shards: list[Path], out: Path, rows_needed: int) -> tuple[Path, int]:
    """The shards' images as files and a CSV (filepath, title) of exactly ``rows_needed`` rows (repeated)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    for shard in shards:
        with tarfile.open(shard) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for name in sorted(members):
                stem, _, ext = name.rpartition(".")
                if ext.lower() not in IMAGE_EXTENSIONS or stem + ".txt" not in members:
                    continue
                path = images / f"{shard.stem}__{name.replace('/', '_')}"
                path.write_bytes(tf.extractfile(members[name]).read())
                rows.append((str(path), tf.extractfile(members[stem + ".txt"]).read().decode().strip()))
    if not rows:
        raise CheckError(f"no image + .txt samples in {len(shards)} shard(s)")
    distinct = len(rows)
    table = out / "train.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        w.writerows(rows[i % distinct] for i in range(rows_needed))
    return table, distinct


# ---------------------------------------------------------------------------------------------- runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict, cwd: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, output to ``log``; on timeout kill the group. (rc, seconds);
    rc None = timed out."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return rc, time.perf_counter() - start


def _tail(log: Path, chars: int = 2500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def steady(values: list[float], warmup: int) -> list[float]:
    return values[warmup:] or values


def vlp_command(args: argparse.Namespace, run: dict, shards: Path, out: Path, device_kind: str) -> list[str]:
    launch = REPO / "launch" / "accelerate" / LAUNCH_CONFIGS[(run["backend"], device_kind)]
    overrides = [
        f"output_dir={out}",
        f"model.name={args.model}",
        f"data.train={shards}",
        "data.shapes_world=",
        f"data.workers={args.workers}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        f"train.warmup_steps={args.warmup}",
        f"train.precision={args.precision}",
        f"train.log_every={10 * args.steps if run.get('audit') else 1}",  # audit: the first and last step only
        f"train.save_every={10 * args.steps}",  # none during the run; the final one is written after the last step
        "train.keep_last=1",
        "eval.zeroshot=[]",
        "eval.every=0",
    ]
    if run["decoder"] is not None:
        overrides.append(f"data.decoder={run['decoder']}")
    overrides += args.vlp_set
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(launch),
        "--num_processes",
        str(run.get("processes", 1)),
        "--main_process_port",
        str(free_port()),
        "-m",
        "vlp.train",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        *overrides,
    ]


def measure_vlp(args, run: dict, shards: Path, work: Path, device_kind: str, env: dict, timeout: float) -> dict:
    out = work / run["slug"]
    cmd = vlp_command(args, run, shards, out, device_kind)
    log = work / f"{run['slug']}.log"
    audit_file = work / f"{run['slug']}_syncs.json"
    if run.get("audit"):
        (work / "gpu_sync_audit.py").write_text(SYNC_AUDIT)
        path = os.pathsep.join(p for p in (str(work), str(REPO), env.get("PYTHONPATH", "")) if p)
        env = {
            **env,
            "PYTHONPATH": path,
            "VLP_TRAIN_HOOKS": "gpu_sync_audit:Audit",
            "VLP_SYNC_AUDIT_OUT": str(audit_file),
        }
    rc, seconds = run_logged(cmd, log, timeout, env, REPO)
    result = {"command": shlex.join(cmd), "wall_s": round(seconds, 1)}
    text = _tail(log, 10**7)
    reported = re.search(r"^# (.+?), (\d+) process\(es\)", text, re.M)
    if reported:
        result["backend_reported"] = f"{reported.group(1)}, {reported.group(2)} process(es)"
    if rc is None:
        return {**result, "status": f"timed out after {timeout:.0f} s", "log_tail": _tail(log)}
    if rc != 0:
        return {**result, "status": f"failed (exit {rc})", "log_tail": _tail(log)}
    metrics = out / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    records = [r for r in records if "samples_per_s" in r]
    if run.get("audit"):
        return {**result, **audit_result(args, records, audit_file, log)}
    if len(records) < args.steps:
        return {**result, "status": f"only {len(records)} of {args.steps} step records", "log_tail": _tail(log)}
    kept = steady(records, args.warmup)
    data_time = statistics.median(r["data_time"] for r in kept)
    step_time = statistics.median(r["step_time"] for r in kept)

    def median_of(key: str) -> float | None:  # loader figures: absent in older vlp, None before a measure
        values = [r[key] for r in kept if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        **result,
        "status": "ok",
        "steps_measured": len(kept),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in kept),
        "step_time_s": step_time,
        "data_time_s": data_time,
        "data_time_share": min(1.0, data_time / step_time) if step_time > 0 else None,
        "peak_memory_mb": max(r.get("peak_memory_mb") or 0.0 for r in records),
        "loader_images_per_s": median_of("loader_images_per_s"),
        "loader_images_per_core_s": median_of("loader_images_per_core_s"),
        "steps_per_s_wall": steps_per_s(records),
    }


def steps_per_s(records: list[dict]) -> float | None:
    """Steps per second between the first and the last step's records (their wall-clock ``time``):
    what a run with sparse logging can be measured by, and a run that logs every step alike."""
    if len(records) < 2 or records[-1]["time"] <= records[0]["time"]:
        return None
    return (records[-1]["step"] - records[0]["step"]) / (records[-1]["time"] - records[0]["time"])


def audit_result(args: argparse.Namespace, records: list[dict], audit_file: Path, log: Path) -> dict:
    """The hot-loop run: steps/s with logging at the first and last step only, and the synchronising CUDA
    calls per step that neither logs nor saves (2 .. steps-1), by owner."""
    if [r["step"] for r in records] != [1, args.steps]:
        return {"status": f"expected records at steps 1 and {args.steps}", "log_tail": _tail(log)}
    if not audit_file.exists():
        return {"status": "the sync audit wrote nothing (hook not loaded?)", "log_tail": _tail(log)}
    audit = json.loads(audit_file.read_text())
    quiet = [str(s) for s in range(2, args.steps)]
    by_owner: dict[str, int] = {}
    for step in quiet:
        for who, n in audit["per_step"].get(step, {}).items():
            by_owner[who] = by_owner.get(who, 0) + n
    return {
        "status": "ok",
        "steps_per_s_wall": steps_per_s(records),
        "samples_per_s": records[-1]["samples_per_s"],
        "peak_memory_mb": max(r.get("peak_memory_mb") or 0.0 for r in records),
        "data_time_share": records[-1]["data_share"],
        "steps_measured": len(quiet),
        "sync_audit": {
            "cuda_sync_debug_mode": audit["cuda"],
            "syncs_per_quiet_step_by_owner": {k: v / len(quiet) for k, v in sorted(by_owner.items())},
            "trainer_syncs_per_quiet_step": by_owner.get("trainer", 0) / len(quiet),
            "trainer_sites": audit["trainer_sites"],
        },
    }


def open_clip_command(args: argparse.Namespace, table: Path, logs: Path, record: Path, peer: Path) -> list[str]:
    model = Path(args.model).stem if args.model.endswith(".json") else args.model
    return [
        sys.executable,
        str(peer),
        args.model,
        str(record),
        "--model",
        model,
        "--train-data",
        str(table),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--csv-separator",
        ",",
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",  # the CSV holds exactly --steps batches
        "--workers",
        str(args.workers),
        "--lr",
        "5e-4",
        "--warmup",
        str(args.warmup),
        "--precision",
        "amp_bf16" if args.precision == "bf16" else "fp32",
        "--logs",
        str(logs),
        "--name",
        "gpu_check",
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
        "--zeroshot-frequency",
        "0",
        "--val-frequency",
        "0",
        "--report-to",
        "",
        "--seed",
        "0",
        "--grad-clip-norm",
        "1.0",  # vlp clips at 1.0 by default: the same work
    ]


def parse_open_clip_log(text: str) -> list[dict]:
    """Per-step (data_time, batch_time, samples/s) from open_clip's 'Train Epoch' lines."""
    return [
        {"data_time": float(d), "step_time": float(b), "samples_per_s": float(s)}
        for d, b, s in OPEN_CLIP_STEP.findall(text)
    ]


def measure_open_clip(args, run: dict, table: Path, work: Path, env: dict, timeout: float) -> dict:
    folder = work / run["slug"]
    folder.mkdir(parents=True, exist_ok=True)
    peer = folder / "open_clip_peer.py"
    peer.write_text(OPEN_CLIP_PEER)
    record = folder / "record.json"
    cmd = open_clip_command(args, table, folder / "logs", record, peer)
    log = work / f"{run['slug']}.log"
    rc, seconds = run_logged(cmd, log, timeout, env, folder)
    result = {
        "command": shlex.join(cmd),
        "wall_s": round(seconds, 1),
        "backend_reported": "open_clip_train.main, 1 process",
    }
    if rc is None:
        return {**result, "status": f"timed out after {timeout:.0f} s", "log_tail": _tail(log)}
    if rc != 0:
        return {**result, "status": f"failed (exit {rc})", "log_tail": _tail(log)}
    steps = parse_open_clip_log(log.read_text(errors="replace"))[: args.steps]
    if len(steps) < args.steps or not record.exists():
        return {**result, "status": f"only {len(steps)} of {args.steps} step lines", "log_tail": _tail(log)}
    measured = json.loads(record.read_text())
    waits = steady(measured["loader_wait_s"][: args.steps], args.warmup)
    kept = steady(steps, args.warmup)
    step_time = statistics.median(s["step_time"] for s in kept)
    data_time = statistics.median(waits) if waits else None
    logged = statistics.median(s["data_time"] for s in kept)
    return {
        **result,
        "status": "ok",
        "steps_measured": len(kept),
        "samples_per_s": statistics.median(s["samples_per_s"] for s in kept),
        "step_time_s": step_time,
        "data_time_s": data_time,
        "data_time_share": min(1.0, data_time / step_time) if data_time is not None and step_time > 0 else None,
        "data_time_share_logged": min(1.0, logged / step_time) if step_time > 0 else None,
        "peak_memory_mb": measured["peak_memory_mb"],
        "loader_images_per_s": None,
        "loader_images_per_core_s": None,
    }


# ---------------------------------------------------------------------------------------------- report


def _fmt(value, digits: int):
    return None if value is None else round(value, digits)


def finish_rows(runs: list[dict], flops: dict, device: dict) -> None:
    """MFU and the ratio to open_clip's trainer, in place."""
    train_flops = flops["train_gflops_per_sample"] * 1e9 if flops else None
    peak = device["peak_tflops"]
    for r in runs:
        sps = r.get("samples_per_s")
        r["achieved_tflops"] = sps * train_flops / 1e12 if sps and train_flops else None
        r["mfu"] = r["achieved_tflops"] / peak if r["achieved_tflops"] and peak else None
    peer = next((r for r in runs if r["trainer"] == "open_clip" and r.get("samples_per_s")), None)
    for r in runs:
        sps = r.get("samples_per_s")
        r["ratio_vs_open_clip"] = sps / peer["samples_per_s"] if sps and peer and r is not peer else None
    # The hot loop against the same backend and decoder logging every step: what logging costs.
    for r in runs:
        if r.get("audit") and r.get("steps_per_s_wall"):
            logged = next(
                (
                    o
                    for o in runs
                    if o.get("backend") == "zero2"
                    and o.get("decoder") == r.get("decoder")
                    and not o.get("audit")
                    and o.get("processes", 1) == 1
                    and o.get("steps_per_s_wall")
                ),
                None,
            )
            r["steps_per_s_logging_every_step"] = logged["steps_per_s_wall"] if logged else None
            r["ratio_quiet_vs_logging"] = r["steps_per_s_wall"] / logged["steps_per_s_wall"] if logged else None


def headline(runs: list[dict]) -> dict | None:
    """The fastest vlp configuration against open_clip's trainer."""
    ours = [
        r
        for r in runs
        if r["trainer"] == "vlp" and r.get("samples_per_s") and not r.get("audit") and r.get("processes", 1) == 1
    ]
    peer = next((r for r in runs if r["trainer"] == "open_clip" and r.get("samples_per_s")), None)
    if not ours:
        return None
    best = max(ours, key=lambda r: r["samples_per_s"])
    return {
        "best_vlp": best["name"],
        "samples_per_s": best["samples_per_s"],
        "mfu": best.get("mfu"),
        "open_clip_samples_per_s": peer["samples_per_s"] if peer else None,
        "ratio_vs_open_clip": best.get("ratio_vs_open_clip"),
    }


COLUMNS = [
    "configuration",
    "samples/s",
    "MFU %",
    "TFLOP/s",
    "peak memory MB",
    "data_time share",
    "loader img/s per core",
    "vs open_clip",
    "status",
]


def table_rows(runs: list[dict]) -> list[dict]:
    return [
        {
            "configuration": r["name"],
            "samples/s": _fmt(r.get("samples_per_s"), 1),
            "MFU %": _fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, 2),
            "TFLOP/s": _fmt(r.get("achieved_tflops"), 3),
            "peak memory MB": _fmt(r.get("peak_memory_mb"), 0),
            "data_time share": _fmt(r.get("data_time_share"), 3),
            "loader img/s per core": _fmt(r.get("loader_images_per_core_s"), 0),
            "vs open_clip": _fmt(r.get("ratio_vs_open_clip"), 3),
            "status": r["status"],
        }
        for r in runs
    ]


def markdown(result: dict) -> str:
    from data_pipelines.tables import markdown_table

    s, f, d = result["settings"], result["flops"], result["device"]
    lines = [
        f"# GPU check{' (dry run, CPU)' if result['dry_run'] else ''}",
        "",
        f"{d['name']}; {f['model']} at {s['image_size']} px, {s['precision']}, batch {s['batch_size']}, "
        f"{s['steps']} steps (medians over the last {s['steps'] - s['warmup']}), "
        f"{s['workers']} loader workers, 1 process.",
        f"FLOPs per trained sample: {f['train_gflops_per_sample']} G (3 x forward, open_clip's profiler); "
        f"peak {d['peak_tflops'] or '-'} TFLOP/s ({d['peak_source']}).",
        "",
        markdown_table(table_rows(result["runs"]), COLUMNS),
        "",
    ]
    for r in result["runs"]:
        audit = r.get("sync_audit")
        if audit:
            owners = ", ".join(f"{k} {v:.2f}" for k, v in audit["syncs_per_quiet_step_by_owner"].items()) or "none"
            lines.append(
                f"Hot loop ({r['name']}): synchronising CUDA calls per step that neither logs nor saves: {owners} "
                f"(sync debug mode {'on' if audit['cuda_sync_debug_mode'] else 'unavailable: CPU'}); "
                f"{_fmt(r.get('steps_per_s_wall'), 2)} steps/s logging at the first and last step against "
                f"{_fmt(r.get('steps_per_s_logging_every_step'), 2)} logging every step "
                f"(ratio {_fmt(r.get('ratio_quiet_vs_logging'), 3)})."
            )
            lines.append("")
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write_results(out: Path, result: dict) -> None:
    from data_pipelines.shards.atomic import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "gpu_check.json", result)
    write_text_atomic(out / "gpu_check.md", markdown(result))


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) if args.dry_run else DEFAULT_OUT)
    )
    notes: list[str] = []
    env = dict(os.environ)
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same code on the CPU, even where a GPU is present
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import machine

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    try:
        runs = plan_runs(args, notes)
        device = device_info(args)
        if device["peak_tflops"] is None:
            notes.append(device["peak_source"])
        print(f"gpu_check: {device['name']}, {len(runs)} configurations, budget {args.budget_s:.0f} s", flush=True)
        flops = count_flops(args.model)
        print(
            f"  FLOPs/sample: {flops['forward_gflops']} G forward "
            f"({flops['image_forward_gflops']} image + {flops['text_forward_gflops']} text), x3 = "
            f"{flops['train_gflops_per_sample']} G trained",
            flush=True,
        )
        work_ctx = tempfile.TemporaryDirectory(prefix="gpu_check_")
        work = Path(work_ctx.name)
        if args.keep_work:
            work_ctx = None
            work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
            notes.append(f"work folder kept: {work}")
        data_info: dict = {}
        if args.data:
            shards_dir = Path(args.data).resolve()
            data_info["shards"] = str(shards_dir)
        else:
            shards_dir = work / "corpus"
            print(f"  corpus: vlp-data photos --n {args.corpus_n} --size {args.corpus_size}", flush=True)
            tic = time.perf_counter()
            data_info.update(make_corpus(args, shards_dir, timeout=max(10.0, left() * 0.4)))
            data_info["corpus_s"] = round(time.perf_counter() - tic, 1)
            data_info["shards"] = "(made here, not kept)"
        shards = shard_paths(shards_dir)
        if not shards:
            raise CheckError(f"no .tar shards in {shards_dir}")
        data_info["shard_count"] = len(shards)
        if len(shards) < args.workers:
            notes.append(f"{len(shards)} shard(s) for {args.workers} loader workers: some of vlp's workers idle")
        table = None
        if any(r["trainer"] == "open_clip" for r in runs):
            table, distinct = csv_from_shards(shards, work / "csv", args.steps * args.batch_size)
            data_info["samples"] = distinct
            data_info["open_clip_csv_rows"] = args.steps * args.batch_size

        for i, run in enumerate(runs, 1):
            run["slug"] = f"run{i}_" + re.sub(r"[^a-z0-9]+", "_", run["name"].lower()).strip("_")
            budget = min(args.run_timeout_s, left())
            if left() < 20:  # not enough left to start a run at all
                run.update(status="skipped: budget spent")
                print(f"  [{i}/{len(runs)}] {run['name']}: skipped (budget spent)", flush=True)
                continue
            print(f"  [{i}/{len(runs)}] {run['name']} (limit {budget:.0f} s) ...", end=" ", flush=True)
            if run["trainer"] == "vlp":
                run.update(measure_vlp(args, run, shards_dir, work, device["kind"], env, budget))
            else:
                run.update(measure_open_clip(args, run, table, work, env, budget))
            if run["status"] == "ok":
                print(
                    f"{run['samples_per_s']:.1f} samples/s, data_time share {run['data_time_share']:.2f}, "
                    f"peak {run['peak_memory_mb']:.0f} MB, {run['wall_s']:.0f} s",
                    flush=True,
                )
            else:
                print(run["status"], flush=True)
                print("    " + run.get("log_tail", "").replace("\n", "\n    ")[-1500:], flush=True)
        finish_rows(runs, flops, device)
        result = {
            "machine": machine(),
            "dry_run": args.dry_run,
            "device": device,
            "flops": flops,
            "settings": {
                "model": args.model,
                "image_size": flops["image_size"][0],
                "steps": args.steps,
                "warmup": args.warmup,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "precision": args.precision,
                "processes": "1 (the 2-rank run: 2)",
                "gpus": args.gpus,
                "decoders": args.decoders,
                "decoder_key": decoder_key_exists(),
                "vlp_set": args.vlp_set,
                "run_timeout_s": args.run_timeout_s,
                "budget_s": args.budget_s,
            },
            "definitions": {
                "samples_per_s": "median over the steps after the warm-up (vlp: global batch / step time per step; "
                "open_clip: its per-step log)",
                "mfu": "samples_per_s x train FLOPs per sample / peak",
                "peak_memory_mb": "GPU: torch.cuda.max_memory_allocated (largest rank); CPU: the process's max RSS",
                "data_time_share": "median time blocked in next(loader) / median step time, after the warm-up; "
                "with data.decoder=device the JPEG decode runs on the device inside the step (step time, "
                "not data_time)",
                "loader_images_per_core_s": "vlp's metrics.jsonl: images/s one loader worker core makes (CPU time "
                "of the last batch), median after the warm-up",
                "ratio_vs_open_clip": "samples_per_s / open_clip trainer's samples_per_s",
            },
            "data": data_info,
            "notes": notes,
            "headline": headline(runs),
            "runs": [{k: v for k, v in r.items() if k != "slug"} for r in runs],
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        write_results(out, result)
        if work_ctx is not None:
            work_ctx.cleanup()
    except CheckError as exn:
        print(f"gpu_check: {exn}", file=sys.stderr)
        return 2
    print()
    print(markdown(result))
    print(f"written {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {result['elapsed_s']:.0f} s")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
