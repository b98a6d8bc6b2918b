"""launch/slurm.sh hands the recipe and every override to accelerate intact (fake srun/scontrol)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

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
