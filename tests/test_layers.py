"""The packages' layers point one way (README "Layout"): data_pipelines <- eval_zeroshot <- vlp. A module
of a lower layer that imports a higher one, even lazily inside a function, is a cycle waiting to happen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("data_pipelines", "eval_zeroshot", "vlp")  # lowest first


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports anywhere in its body (relative imports stay inside it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_scan_sees_lazy_and_nested_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os.path\ndef f():\n    from vlp.study import stats\n    from . import sibling\n")
    assert imported_packages(module) == {"os", "vlp"}


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_module_imports_a_higher_layer(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & higher)
        for path in sorted((REPO / layer).rglob("*.py"))
        if imported_packages(path) & higher
    }
    assert not offenders, offenders
