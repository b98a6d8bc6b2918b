"""Product code stays readable in one sitting (issue 25): no module over 300 lines and no function over 80,
in the packages, the benchmarks and launch/. Tests are not product code."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("vlp", "data_pipelines", "eval_zeroshot", "benchmarks", "launch")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 80


def oversized(root: Path = REPO) -> list[str]:
    """Every module over MAX_MODULE_LINES and every function (methods and nested functions included)
    over MAX_FUNCTION_LINES, as 'path: what, lines'."""
    found = []
    for folder in PRODUCT:
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text()
            where = path.relative_to(root).as_posix()
            if (n := len(text.splitlines())) > MAX_MODULE_LINES:
                found.append(f"{where}: module, {n} lines")
            for node in ast.walk(ast.parse(text, where)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        found.append(f"{where}:{node.lineno}: {node.name}, {n} lines")
    return found


def test_the_scan_sees_a_long_function_and_a_long_module(tmp_path):
    (tmp_path / "vlp").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "vlp" / "long.py").write_text(f"def long():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    (tmp_path / "vlp" / "short.py").write_text("def short():\n    return 1\n")
    assert oversized(tmp_path) == [
        f"vlp/long.py: module, {MAX_FUNCTION_LINES + 1 + MAX_MODULE_LINES} lines",
        f"vlp/long.py:1: long, {MAX_FUNCTION_LINES + 1} lines",
    ]


def test_no_module_or_function_is_too_long():
    assert oversized() == []
