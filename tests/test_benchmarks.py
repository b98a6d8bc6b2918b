"""Every benchmark in benchmarks/ runs at its smallest size (issue 25).

Each benchmark script says in its --help (its docstring) how to run it small, on a line "Smallest ...:"
followed by the command(s); these tests run exactly those commands, with the --json result redirected
into the test's folder (never benchmarks/results/), and check that each exits 0 and writes its JSON.
The runs take minutes (each starts trainers, builds models, generates data), so they run under
`make scale`; the check that every benchmark gives its smallest command runs in `make test`.

Not run here: benchmarks/gpu_check.py (its --dry-run has its own test, tests/test_gpu_check.py, and its
real run needs a GPU); benchmarks/comm_audit.py (not a script: the trainer hook benchmarks/comm_bytes.py
installs, run with it); the modules the scripts import (_machine.py, comm_formula.py, comm_runs.py,
loader_peers.py).
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"
NOT_RUN = {"gpu_check.py": "tests/test_gpu_check.py runs its --dry-run; the real check needs a GPU"}


def scripts() -> list[Path]:
    """The benchmark scripts: benchmarks/*.py that run as a program (``if __name__ == "__main__"``)."""
    return [
        p
        for p in sorted(BENCHMARKS.glob("*.py"))
        if p.name not in NOT_RUN and 'if __name__ == "__main__":' in p.read_text()
    ]


def smallest(script: Path) -> list[list[str]]:
    """The command lines under the "Smallest" line of the script's docstring (backslash continues a line)."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    lines = doc.replace("\\\n", " ").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Smallest")), None)
    if start is None:
        return []
    commands = []
    for line in lines[start + 1 :]:
        if not line.strip().startswith("python "):
            break
        commands.append(shlex.split(line))
    return commands


CASES = [(s, i, cmd) for s in scripts() for i, cmd in enumerate(smallest(s))]


def results_state() -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in RESULTS.rglob("*") if p.is_file()}


def test_every_benchmark_says_how_to_run_it_small():
    found = scripts()
    assert {p.name for p in found} >= {"train_throughput.py", "loader.py", "eval.py", "study_headline.py"}
    for script in found:
        commands = smallest(script)
        assert commands, f"{script.name}: no 'Smallest' command in its docstring (its --help)"
        text = script.read_text()
        assert "description=__doc__" in text, f"{script.name}: --help does not show the docstring"
        for cmd in commands:
            assert cmd[:2] == ["python", f"benchmarks/{script.name}"], cmd
            assert "--json" in cmd, f"{script.name}: the smallest command should name its --json"


@pytest.mark.scale
@pytest.mark.parametrize("script,index,cmd", CASES, ids=[f"{s.stem}{f'-{i}' if i else ''}" for s, i, _ in CASES])
def test_benchmark_runs_at_its_smallest_size(script, index, cmd, tmp_path):
    out = tmp_path / f"{script.stem}.json"
    argv = [sys.executable, *cmd[1:]]
    argv[argv.index("--json") + 1] = str(out)
    before = results_state()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    rows = result.get("rows", result.get("points"))
    assert rows, result
    failed = [v for r in rows for v in r.values() if isinstance(v, str) and v.startswith("failed")]
    assert not failed, failed  # benchmarks/memory.py records a failed run in its table instead of stopping
    assert results_state() == before, "the benchmark wrote into benchmarks/results/"
