"""Every entry point follows vlp.common.cli's convention: a bad path or a bad value is one line,
``PROG: error: ...`` naming it, exit code 2, nothing written; Ctrl-C is 130; every ``--help`` ends with
examples of that command."""

from __future__ import annotations

import argparse

import pytest
import tomllib

from data_pipelines.cli import main as vlp_data
from eval_zeroshot.cli import main as vlp_eval
from tests.runs import REPO
from vlp.common.cli import EXIT_INTERRUPTED, EXIT_USAGE, run
from vlp.export import main as vlp_export
from vlp.study.cli import main as vlp_study
from vlp.train.cli import main as vlp_train

MAINS = {
    "vlp-data": vlp_data,
    "vlp-eval": vlp_eval,
    "vlp-train": vlp_train,
    "vlp-export": vlp_export,
    "vlp-study": vlp_study,
}
MISSING = "/nonexistent/vlp-missing"

# (entry point, arguments, what the message must name); OUT stands for a fresh folder that must stay unwritten.
BAD_PATHS = [
    ("vlp-data", ["shapes-probes", "--out", "OUT", "--drawing", "nosuch"], "nosuch"),
    ("vlp-data", ["shards", "--input", f"{MISSING}.csv", "--out", "OUT"], f"{MISSING}.csv"),
    ("vlp-data", ["stats", MISSING], MISSING),
    ("vlp-data", ["negatives", MISSING, "--out", "OUT"], MISSING),
    ("vlp-data", ["neighbours", MISSING, "--out", "OUT", "--model", "ViT-B-32"], MISSING),
    ("vlp-data", ["peek", MISSING], MISSING),
    ("vlp-eval", ["zeroshot", "--model", "ViT-B-32", "--dataset", MISSING, "--out", "OUT/r.json"], MISSING),
    ("vlp-eval", ["compositional", "--model", "ViT-B-32", "--benchmark", "shapes", "--data", MISSING], MISSING),
    ("vlp-eval", ["diagnose", "--model", "ViT-B-32", "--data", MISSING], MISSING),
    ("vlp-eval", ["report", f"{MISSING}.json", "--out", "OUT/report.html"], f"{MISSING}.json"),
    ("vlp-train", ["--config", f"{MISSING}.yaml", "output_dir=OUT"], f"{MISSING}.yaml"),
    ("vlp-export", [MISSING, "--out", "OUT"], MISSING),
    ("vlp-export", ["convert", f"{MISSING}.pt", "--out", "OUT/w.safetensors"], f"{MISSING}.pt"),
    ("vlp-study", ["--config", f"{MISSING}.yaml"], f"{MISSING}.yaml"),
]

BAD_VALUES = [
    ("vlp-data", ["shapes", "--out", "OUT", "--train-samples", "0"], "--train-samples"),
    ("vlp-data", ["shards", "--input", "x.csv", "--out", "OUT", "--shard-size", "-3"], "--shard-size"),
    ("vlp-data", ["peek", "data", "--batch-size", "many"], "--batch-size"),
    ("vlp-data", ["neighbours", "x", "--out", "OUT", "--model", "ViT-B-32", "--batch-size", "0"], "--batch-size"),
    ("vlp-data", ["photos", "--out", "OUT", "--n", "0"], "--n"),
    ("vlp-eval", ["zeroshot", "--model", "ViT-B-32", "--dataset", "d", "--batch-size", "0"], "--batch-size"),
    ("vlp-eval", ["compositional", "--model", "ViT-B-32", "--benchmark", "nosuch"], "--benchmark"),
    ("vlp-eval", ["diagnose", "--model", "ViT-B-32", "--data", "d", "--batch-size", "-1"], "--batch-size"),
    ("vlp-eval", ["report", "r.json", "--out", "OUT/report.pdf"], "report.pdf"),
    (
        "vlp-train",
        ["--config", str(REPO / "configs/demo.yaml"), "output_dir=OUT", "train.max_steps=-1"],
        "train.max_steps",
    ),
    ("vlp-export", ["convert", str(REPO / "configs/demo.yaml"), "--out", "OUT/w.safetensors"], "demo.yaml"),
    ("vlp-study", ["--config", "s.yaml", "--max-cells", "-1"], "--max-cells"),
]


def call(prog: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run an entry point in this process: (exit code, stdout, stderr), argparse's exits included."""
    try:
        code = MAINS[prog](argv)
    except SystemExit as exn:
        code = exn.code
    out, err = capsys.readouterr()
    return code, out, err


def check_one_error_line(prog: str, code: int, err: str, named: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USAGE, (code, err)
    assert "Traceback" not in err, err
    last = lines[-1]
    assert last.startswith(prog) and ": error: " in last and named in last, last


def test_every_entry_point_is_covered():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(MAINS)
    assert {p for p, _, _ in BAD_PATHS} == set(MAINS) == {p for p, _, _ in BAD_VALUES}


@pytest.mark.parametrize(
    ("prog", "argv", "named"), BAD_PATHS + BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_a_bad_path_or_value_is_one_line_exit_2_nothing_written(prog, argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code, _, err = call(prog, [a.replace("OUT", str(out)) for a in argv], capsys)
    check_one_error_line(prog, code, err, named)
    assert not out.exists()


def _commands(prog: str) -> list[list[str]]:
    """The entry point and each of its subcommands, as argv prefixes."""
    if prog == "vlp-export":
        return [[], ["convert"]]
    if prog in ("vlp-train", "vlp-study"):
        return [[]]
    parser = {"vlp-data": "data_pipelines.cli", "vlp-eval": "eval_zeroshot.cli"}[prog]
    module = __import__(parser, fromlist=["build_parser"])
    subs = next(a for a in module.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [[], *([name] for name in subs.choices)]


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_every_help_ends_with_examples_of_its_command(prog, capsys):
    for prefix in _commands(prog):
        code, out, _ = call(prog, [*prefix, "--help"], capsys)
        assert code == 0
        examples = out.split("\nexamples:\n", 1)
        assert len(examples) == 2, (prog, prefix, out[-300:])
        lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
        command = " ".join([prog, *prefix])
        assert lines and all(line.startswith((command, "accelerate launch")) for line in lines), (command, lines)


def test_ctrl_c_is_one_line_and_130(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert run("vlp-data", interrupted, argparse.Namespace()) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "vlp-data: interrupted\n"
