"""launch/slurm.sh hands the recipe and every override to accelerate intact (fake srun/scontrol)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import torch

from tests.runs import REPO


def fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_keeps_overrides_with_spaces_whole(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    fake(bin_dir, "scontrol", "for n in node-a node-b node-c; do echo $n; done\n")
    fake(bin_dir, "srun", 'while [[ "$1" == --* ]]; do shift; done; exec "$@"\n')  # run the node's command here
    fake(
        bin_dir,
        "accelerate",
        f'python3 -c \'import json, sys; json.dump(sys.argv[1:], open("{record}", "w"))\' "$@"\n',
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
    }
    overrides = ["objective.terms={clip: 1.0, igc: 0.1}", "output_dir=runs/a b", "data.train=/d/{0..9}.tar"]
    proc = subprocess.run(
        ["bash", str(REPO / "launch/slurm.sh"), "configs/demo.yaml", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(record.read_text())
    expected = ["--config", "configs/demo.yaml", "train.resume=latest", *overrides]
    assert argv[-len(expected) :] == expected
    assert argv[argv.index("--num_processes") + 1] == "16" and argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "node-a"


def _zero_config(name: str) -> dict:
    return json.loads((REPO / "launch" / "deepspeed" / name).read_text())


def test_deepspeed_configs_are_valid_and_tuned_for_gpus():
    """DeepSpeed's own config models accept every JSON (they refuse unknown keys); the GPU configs
    overlap the gradient reduce with backward in buckets smaller than ViT-B/32's gradients and reduce
    in fp32 under bf16; the CPU configs keep what gloo needs."""
    from deepspeed.runtime.config import get_communication_data_type
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    for name in ("zero1.json", "zero2.json", "zero3.json", "cpu_zero2.json", "cpu_zero3.json"):
        DeepSpeedZeroConfig(**_zero_config(name)["zero_optimization"])
    vitb32_params = 151_277_313
    for name in ("zero2.json", "zero3.json"):
        cfg = _zero_config(name)
        zero = cfg["zero_optimization"]
        assert zero["overlap_comm"] is True, name
        assert zero["reduce_bucket_size"] * 2 <= vitb32_params, name  # several buckets: reduce overlaps backward
        assert get_communication_data_type(cfg) == torch.float32, name
    zero3 = _zero_config("zero3.json")["zero_optimization"]
    assert zero3["stage3_prefetch_bucket_size"] > 0 and zero3["stage3_param_persistence_threshold"] > 0
    assert _zero_config("cpu_zero2.json")["zero_optimization"]["overlap_comm"] is False
    cpu_launch = (REPO / "launch/accelerate/cpu_deepspeed_zero2.yaml").read_text()
    assert "launch/deepspeed/cpu_zero2.json" in cpu_launch
    for gpu in ("gpu_zero2.yaml", "multinode_zero2.yaml"):
        assert "launch/deepspeed/zero2.json" in (REPO / "launch/accelerate" / gpu).read_text()
