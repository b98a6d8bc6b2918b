"""docs/METHODS.md's evidence is real: every test it names exists, every config it names is shipped,
and every hand-checked number it quotes appears in a test; the README's configs and results are committed."""

from __future__ import annotations

import re

from tests.runs import REPO

METHODS = (REPO / "docs" / "METHODS.md").read_text()
TESTS = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))


def test_every_named_test_exists():
    named = set(re.findall(r"`(?:tests/\w+\.py::)?(test_\w+?)(?:…|\[\w+\])?`", METHODS))
    assert len(named) >= 10
    for name in named:  # a name cut with "…" is a prefix
        assert re.search(rf"def {name}", TESTS), name


def test_every_named_config_is_shipped():
    for path in set(re.findall(r"`(configs/[\w/.]+\.yaml)`", METHODS)):
        assert (REPO / path).is_file(), path


def test_every_hand_check_is_asserted():
    checks = set(re.findall(r"(?:→|check) (−?\d+\.\d{4,6})", METHODS))
    assert {"0.310370", "0.313262", "0.492820", "3.8420"} <= checks
    for value in checks:
        assert value.replace("−", "-") in TESTS or value.lstrip("−") in TESTS, value


def test_every_config_and_result_the_readme_names_is_committed():
    """The README's numbers come from committed files: every config, study and result it names exists."""
    readme = (REPO / "README.md").read_text()
    paths = set(re.findall(r"((?:configs|benchmarks/results)/[\w/.-]+\.(?:yaml|json|md|png))", readme))
    assert {"configs/relations.yaml", "configs/studies/main.yaml", "benchmarks/results/study/main/table.md"} <= paths
    missing = sorted(p for p in paths if not (REPO / p).is_file())
    assert not missing, missing
