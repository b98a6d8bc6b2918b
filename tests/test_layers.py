"""The import graph: no circle, and every arrow points down the layers

    vlp.common  <-  data_pipelines  <-  eval_zeroshot  <-  the vlp library  <-  vlp's applications

(the applications: vlp.train, vlp.study and the vlp-export command; the library: everything else in
vlp, which a user of the losses or the model imports without the trainer). Imports inside functions
count: a lazy import that points up is a circle waiting to happen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vlp", "data_pipelines", "eval_zeroshot")
APPLICATIONS = ("vlp.train", "vlp.study", "vlp.export")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = REPO, packages=PACKAGES) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that importing ``name`` runs, as Python does it: the module imported and
    the packages above it (their ``__init__``), less the packages above ``name`` itself (already running)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                found.add(".".join(parts[:i]))
    running = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_package)}
    return {t for t in found if t in known and t not in running and t != name}


def graph(root: Path = REPO, packages=PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(name: str) -> int:
    if name == "vlp.common" or name.startswith("vlp.common."):
        return 0
    if name.split(".")[0] == "data_pipelines":
        return 1
    if name.split(".")[0] == "eval_zeroshot":
        return 2
    if any(name == app or name.startswith(app + ".") for app in APPLICATIONS):
        return 4
    return 3 if name != "vlp" else 0  # vlp/__init__.py holds only the version


def test_the_scan_follows_python(tmp_path):
    """Lazy imports count; ``from pkg import sub`` is the module; importing a.b.c runs a and a.b; a module
    does not depend on the packages it sits in."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "sub/__init__", "sub/c"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom ..b import thing\nimport os\n")
    edges = graph(tmp_path, ("pkg",))
    assert edges["pkg"] == {"pkg.a"}
    assert edges["pkg.a"] == {"pkg.sub", "pkg.sub.c"}
    assert edges["pkg.sub.c"] == {"pkg.b"}
    assert circles(edges) == []
    (pkg / "b.py").write_text("import pkg.a\n")  # b -> a -> sub.c -> b
    assert circles(graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_a_package_that_imports_its_importer_is_a_circle(tmp_path):
    """objectives/__init__ importing protoclip.loss, which imports objectives.registry, is a circle: the
    registry's package runs first."""
    for name in ("objectives/__init__", "objectives/registry", "protoclip/__init__", "protoclip/loss"):
        (tmp_path / "v" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "v" / f"{name}.py").write_text("")
    (tmp_path / "v" / "__init__.py").write_text("")
    (tmp_path / "v" / "objectives" / "__init__.py").write_text("from ..protoclip import loss\n")
    (tmp_path / "v" / "protoclip" / "loss.py").write_text("from ..objectives.registry import x\n")
    assert circles(graph(tmp_path, ("v",))) == [["v.objectives", "v.protoclip.loss"]]


def test_no_circle():
    assert circles(graph()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_arrow_points_down(package):
    up = sorted(
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.split(".")[0] == package
        for target in targets
        if layer(target) > layer(name)
    )
    assert not up, up


def test_the_library_never_imports_the_applications():
    """A user of vlp's losses or model does not import the trainer: checked by the layers above, and here
    spelled out for the modules a library user touches."""
    edges = graph()
    for name in ("vlp.objectives", "vlp.protoclip", "vlp.model", "vlp.collectives", "vlp.checkpoint", "vlp.ema"):
        reach, todo = set(), [name]
        while todo:
            for target in edges[todo.pop()] - reach:
                reach.add(target)
                todo.append(target)
        assert not [m for m in reach if layer(m) == 4], (name, sorted(m for m in reach if layer(m) == 4))
