"""benchmarks/gpu_check.py: its pieces, and its --dry-run end to end on the CPU (the same code a GPU runs)."""

from __future__ import annotations

import importlib.util
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_shards

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jpeg_samples(n: int) -> list[dict]:
    """Small JPEG photos with captions, the corpus shape the check reads (independent of vlp-data photos)."""
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    samples = []
    for i in range(n):
        image = Image.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = rng.randrange(140), rng.randrange(100)
            draw.ellipse((x, y, x + 20, y + 20), fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        samples.append({"__key__": f"p{i:05d}", "jpg": buf.getvalue(), "txt": f"a photo, number {i}".encode()})
    return samples


def test_peak_table_matches_specific_names_first():
    gc = load_script()
    assert gc.peak_tflops("NVIDIA H200", None)[0] == 989.4
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3", None)[0] == 989.4
    assert gc.peak_tflops("NVIDIA H100 PCIe", None)[0] == 756.0
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", None)[0] == 312.0
    assert gc.peak_tflops("NVIDIA L40S", None)[0] == 362.05
    assert gc.peak_tflops("cpu", None)[0] is None
    assert gc.peak_tflops("cpu", 1.5) == (1.5, "--peak-tflops")


def test_open_clip_log_lines_parse_per_step():
    gc = load_script()
    line = (
        "2026-11-30,02:51:49 | INFO | Train Epoch: 0 [ 16/32 (50%)] Data (t): 0.008 Batch (t): 4.847, "
        "1.65066/s, 1.65066/s/gpu LR: 0.000500 Logit Scale: 14.279 Loss: 2.3211 (2.2084)"
    )
    assert (
        gc.parse_open_clip_log(line + "\nother\n" + line)
        == [{"data_time": 0.008, "step_time": 4.847, "samples_per_s": 1.65066}] * 2
    )


def test_default_plans_put_the_peer_first():
    gc = load_script()
    full = gc.plan_runs(gc.parse_args([]), [])
    dry = gc.plan_runs(gc.parse_args(["--dry-run"]), notes := [])
    assert full[0]["trainer"] == "open_clip"
    if gc.decoder_key_exists():  # 2 backends x 2 decoders
        assert {(r["backend"], r["decoder"]) for r in full[1:]} == {
            (b, d) for b in ("ddp", "zero2") for d in ("fast", "device")
        }
    assert [r["trainer"] for r in dry] == ["open_clip", "vlp", "vlp", "vlp", "vlp"] and notes
    # after the comparison: the hot loop's sync audit, then 2 ranks (the dry run has 2 CPU "devices")
    assert dry[3]["audit"] and dry[3]["processes"] == 1 and dry[4]["processes"] == 2
    assert full[-1]["audit"]  # one GPU here (none: the CPU): no 2-rank run planned


def test_missing_photos_command_says_to_pass_data(tmp_path, monkeypatch):
    gc = load_script()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vlp-data").write_text("#!/bin/sh\necho \"invalid choice: 'photos'\" >&2\nexit 2\n")
    (fake / "vlp-data").chmod(0o755)
    monkeypatch.setattr(gc, "BIN", fake)
    with pytest.raises(gc.CheckError, match="pass --data DIR"):
        gc.make_corpus(gc.parse_args(["--dry-run"]), tmp_path / "corpus", timeout=10)


@pytest.mark.slow
@pytest.mark.scale  # about 2 minutes: make scale (CI runs it after make test)
def test_dry_run_measures_every_configuration(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, jpeg_samples(48), shard_size=16)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--data", str(shards), "--out", str(out), "--steps", "3"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry_run"] and result["machine"]["cores"]
    assert result["flops"]["train_gflops_per_sample"] > 0
    assert result["flops"]["train_gflops_per_sample"] == pytest.approx(3 * result["flops"]["forward_gflops"], rel=1e-3)
    runs, (hot, two) = result["runs"][:3], result["runs"][3:]
    assert [r["trainer"] for r in runs] == ["open_clip", "vlp", "vlp"]
    assert [r.get("backend") for r in runs[1:]] == ["ddp", "zero2"]
    if result["settings"]["decoder_key"]:
        assert [r["decoder"] for r in runs[1:]] == ["fast", "device"]  # the GPU decode path off, then on
    assert "DeepSpeed ZeRO-2, 1 process(es)" in runs[2]["backend_reported"]
    # The hot loop: logging at the first and last step only, its sync audit loaded (CUDA's sync debug
    # mode has nothing to count on a CPU), steps/s set against the ZeRO-2 run that logs every step.
    assert hot["status"] == "ok" and hot["audit"] and "DeepSpeed ZeRO-2, 1 process(es)" in hot["backend_reported"]
    assert hot["sync_audit"]["cuda_sync_debug_mode"] is False and hot["steps_measured"] == 1
    assert hot["steps_per_s_wall"] > 0 and hot["steps_per_s_logging_every_step"] == runs[2]["steps_per_s_wall"]
    assert hot["ratio_quiet_vs_logging"] == pytest.approx(hot["steps_per_s_wall"] / runs[2]["steps_per_s_wall"])
    # Two ranks (two CPU processes here; two GPUs where the check runs for real).
    assert two["status"] == "ok" and "DeepSpeed ZeRO-2, 2 process(es)" in two["backend_reported"]
    assert "Hot loop (" in (out / "gpu_check.md").read_text()
    for r in runs:
        assert r["status"] == "ok", r
        assert r["samples_per_s"] > 0
        assert 0.0 <= r["data_time_share"] <= 1.0
        assert r["peak_memory_mb"] > 0
        assert r["steps_measured"] == 2  # 3 steps, 1 of warm-up
        assert r["mfu"] is None  # no CPU peak
    for r in runs[1:]:
        assert r["loader_images_per_core_s"] is None or r["loader_images_per_core_s"] > 0
        assert r["ratio_vs_open_clip"] == pytest.approx(r["samples_per_s"] / runs[0]["samples_per_s"])
    assert result["headline"]["best_vlp"] in {r["name"] for r in runs[1:]}

    table = (out / "gpu_check.md").read_text()
    for r in [*runs, hot, two]:
        assert f"| {r['name']} |" in table
    assert "| configuration | samples/s | MFU % |" in table
