"""The documentation cannot drift from the repository.

docs/METHODS.md's evidence is real: every test it names exists, every config it names is shipped, and
every hand-checked number it quotes appears in a test. For README.md and every docs/*.md page:

* every repository path they name exists. A repository path is one that starts with a committed
  top-level folder (``REPO_ROOTS``: configs/, benchmarks/, launch/, vlp/, data_pipelines/,
  eval_zeroshot/, tests/, docs/, .ci/); anything else (runs/..., data/..., out/..., shards/...,
  OUTPUT/..., /data/...) is what a command writes or the reader's own files, and is not checked. A
  glob (``configs/*.yaml``) must match a file, a brace list (``zero{1,2,3}.json``) every alternative,
  and an upper-case placeholder (``configs/studies/NAME.yaml``) is a glob. ``NOT_YET_WRITTEN`` names the
  few outputs under benchmarks/results/ that the docs announce before any machine has produced them;
* every dotted module they name (``vlp.train.reshard``, ``data_pipelines.loader.order``,
  ``vlp.distributed.host_group()``) is a module, or a name defined at the top of one; every import of
  a ``python`` block resolves the same way;
* every relative link resolves to a file, and an anchor (``page.md#a-heading``) to a heading of it;
* every ``make X`` in code is a Makefile target;
* every command in a ``bash`` block or an inline code span that starts with one of the project's
  commands (pyproject's [project.scripts]; ``python -m MODULE``; ``python FILE``;
  ``accelerate launch --config_file FILE ... -m MODULE``) names an existing entry point, subcommand,
  module or file, and each ``--flag`` it passes is one its ``--help`` lists;
* the README stays a front door (at most ``README_MAX_LINES`` lines) that links every docs page, and
  each docs page opens, under its title, with a paragraph saying which questions it answers;
* the Layout of docs/architecture.md lists every module of vlp/, data_pipelines/ and eval_zeroshot/,
  and nothing that is not there.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import glob
import importlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.runs import BIN, REPO

METHODS = (REPO / "docs" / "METHODS.md").read_text()
TESTS = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
README = REPO / "README.md"
DOC_PAGES = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOC_PAGES]
PAGE_IDS = [str(p.relative_to(REPO)) for p in PAGES]
README_MAX_LINES = 200
PACKAGES = ("vlp", "data_pipelines", "eval_zeroshot")
REPO_ROOTS = ("configs", "benchmarks", "launch", "vlp", "data_pipelines", "eval_zeroshot", "tests", "docs", ".ci")
# Written by benchmarks/gpu_check.py on the first GPU lent to the project (docs/benchmarks.md says so).
NOT_YET_WRITTEN = {"benchmarks/results/gpu/gpu_check.json", "benchmarks/results/gpu/gpu_check.md"}

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
PATH = re.compile(
    r"(?<![\w./:$~-])((?:" + "|".join(re.escape(r) for r in REPO_ROOTS) + r")/(?:[\w.*/-]|\{[\w.,-]*\})*)"
)
DOTTED = re.compile(r"(?<![\w./-])((?:" + "|".join(PACKAGES) + r"|tests)(?:\.\w+)+)(?::(\w+))?")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE = re.compile(r"`([^`]+)`")
MAKE = re.compile(r"(?<![\w-])make\s+([a-z][\w-]*)")
FLAG = re.compile(r"^\[?(--[A-Za-z][\w-]*)")


def _text(page: Path) -> str:
    return page.read_text()


def _fences(md: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return FENCE.findall(md)


def _prose(md: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", md)


def _code(md: str) -> list[str]:
    """Every piece of code on the page: fenced blocks and inline spans of the prose."""
    return [body for _, body in _fences(md)] + INLINE.findall(_prose(md))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _prose(_text(page)), re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _headings(page: Path) -> list[str]:
    return re.findall(r"^#{1,6}\s+(.+?)\s*$", _prose(_text(page)), re.M)


def _toml_section(name: str) -> dict[str, str]:
    """``key = "value"`` / ``key = [...]`` lines of one section of pyproject.toml (no TOML parser on 3.10)."""
    text = (REPO / "pyproject.toml").read_text()
    body = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert body, f"pyproject.toml has no [{name}]"
    return dict(re.findall(r"^([\w-]+)\s*=\s*(.+)$", body.group(1), re.M))


SCRIPTS = {name: value.strip().strip('"') for name, value in _toml_section("project.scripts").items()}
EXTRAS = set(_toml_section("project.optional-dependencies"))


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    targets = set()
    for names in re.findall(r"^([\w. -]+?)\s*:(?!=)", text, re.M):
        targets.update(n for n in names.split() if not n.startswith("."))
    return targets


def _expand(path: str) -> list[str]:
    """A brace list to its alternatives (``zero{1,2,3}.json``); ranges (``{0..9}``) are left to the caller."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if not match:
        return [path]
    return [x for alt in match.group(1).split(",") for x in _expand(path[: match.start()] + alt + path[match.end() :])]


def _missing_path(path: str) -> str | None:
    """None when the repository has ``path`` (a file, a folder, a glob's match); else why not."""
    for one in _expand(path):
        if one in NOT_YET_WRITTEN or (REPO / one).exists():
            continue
        pattern = re.sub(r"(?<![a-z])[A-Z][A-Z0-9_]+(?![a-z])", "*", one)  # NAME, STUDY: placeholders
        if "*" in pattern and glob.glob(str(REPO / pattern)):
            continue
        return one
    return None


def _module_file(parts: list[str]) -> Path | None:
    base = REPO.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@functools.cache
def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _unresolved(dotted: str, attr: str | None = None) -> str | None:
    """None when ``dotted`` is a module, or a module and a name defined at its top; else what is missing."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        path = _module_file(parts[:n])
        if path is None:
            continue
        rest = parts[n:] + ([attr] if attr else [])
        if not rest or rest[0] in _top_level_names(path) or _module_file(parts[:n] + rest[:1]):
            return None
        return f"{'.'.join(parts[:n])} defines no {rest[0]}"
    return f"no module {dotted}"


def _commands(code: str) -> list[list[str]]:
    """Shell words of each command in a piece of code: continuations joined, comments dropped, split
    at ``&&``, ``;`` and ``|``."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unclosed quote: not a command
            continue
        current: list[str] = []
        for word in words:
            if word in ("&&", ";", "|", "||"):
                out.append(current)
                current = []
            else:
                current.append(word)
        out.append(current)
    return [c for c in out if c]


@functools.cache
def _help(script: str, sub: str | None) -> tuple[int, str]:
    """Exit code and output of ``SCRIPT [SUB] --help``, run in this process (each CLI imports once)."""
    module, func = SCRIPTS[script].split(":")
    argv = [sub, "--help"] if sub else ["--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = getattr(importlib.import_module(module), func)(argv)
    except SystemExit as exn:
        code = exn.code if isinstance(exn.code, int) else 1
    except TypeError:  # a main() that reads sys.argv itself
        run = subprocess.run([str(BIN / script), *argv], capture_output=True, text=True, timeout=120)
        return run.returncode, run.stdout + run.stderr
    return code or 0, out.getvalue()


def _cli_problems(script: str, args: list[str]) -> list[str]:
    """What is wrong with ``SCRIPT ARGS``: an unknown subcommand or a flag its --help does not list."""
    if script not in SCRIPTS:
        return [f"{script} is not in pyproject's [project.scripts]"]
    sub = args[0] if args and re.fullmatch(r"[a-z][a-z0-9-]*", args[0]) else None
    code, text = _help(script, sub)
    if sub and (code != 0 or not re.search(rf"usage: {re.escape(script)} {re.escape(sub)}\b", text)):
        return [f"{script} has no subcommand {sub!r}"]
    flags = {m.group(1) for a in args if (m := FLAG.match(a))}
    return [
        f"{script}{' ' + sub if sub else ''} has no {f}"
        for f in sorted(flags)
        if not re.search(rf"{re.escape(f)}(?![\w-])", text)
    ]


def _script_of_module(module: str) -> str | None:
    """The entry point ``python -m MODULE`` runs (``vlp.train`` -> vlp-train), when exactly one matches."""
    found = [s for s, target in SCRIPTS.items() if target.split(":")[0] in (module, f"{module}.cli")]
    return found[0] if len(found) == 1 else None


def _command_problems(words: list[str]) -> list[str]:
    """What is wrong with one shell command of the docs (commands of other tools pass)."""
    head, args = words[0], words[1:]
    if head in SCRIPTS or head.startswith("vlp-"):
        return _cli_problems(head, args)
    module = None
    if head in ("python", "python3") and args:
        if args[0] == "-m" and len(args) > 1:
            module, args = args[1], args[2:]
        elif args[0].endswith(".py"):
            return [] if (REPO / args[0]).is_file() else [f"no file {args[0]}"]
        else:
            return []
    elif head == "accelerate" and args[:1] == ["launch"]:
        problems = []
        if "--config_file" in args:
            config = args[args.index("--config_file") + 1]
            problems += [] if (REPO / config).is_file() else [f"no accelerate config {config}"]
        if "-m" not in args:
            return problems
        i = args.index("-m")
        module, args = args[i + 1], args[i + 2 :]
        if problems:
            return problems
    if module is None:
        return []
    if module.split(".")[0] not in PACKAGES:
        return []
    if _module_file(module.split(".")) is None:
        return [f"no module {module}"]
    script = _script_of_module(module)
    return _cli_problems(script, args) if script else []


def _pip_extras(md: str) -> set[str]:
    return set(re.findall(r"\bvlp\[(\w+)\]", md))


# ---------------------------------------------------------------------------------------------- METHODS


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


# ------------------------------------------------------------------------------------ README and docs/


def test_every_config_and_result_the_docs_name_is_committed():
    """The numbers come from committed files: every config, study and result README or docs/ names exists."""
    text = "\n".join(_text(p) for p in PAGES)
    paths = set(re.findall(r"((?:configs|benchmarks/results)/[\w/.-]+\.(?:yaml|json|md|png))", text))
    assert {"configs/relations.yaml", "configs/studies/main.yaml", "benchmarks/results/study/main/table.md"} <= paths
    missing = sorted(p for p in paths if _missing_path(p))
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_repository_path_exists(page):
    paths = {m.rstrip(".,") for m in PATH.findall(_text(page))}
    missing = sorted({p for p in paths if _missing_path(p)})
    assert not missing, f"{page.name} names paths the repository does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_named_module_exists(page):
    md = _text(page)
    problems = set()
    for code in _code(md):
        for dotted, attr in DOTTED.findall(code):
            problems.add(_unresolved(dotted, attr or None))
    for lang, body in _fences(md):
        if lang != "python":
            continue
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                problems.update(_unresolved(node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                problems.update(_unresolved(a.name) for a in node.names if a.name.split(".")[0] in PACKAGES)
    problems.discard(None)
    assert not problems, f"{page.name} names modules or names that do not exist: {sorted(problems)}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_named_test_of_the_docs_exists(page):
    named = re.findall(r"`(?:(tests/\w+\.py)::)?(test_\w+)(…)?(?:\[[^\]`]*\])?`", _text(page))
    missing = sorted(
        f"{file}::{name}" if file else name
        for file, name, cut in named  # a name cut with "…" is a prefix
        if not re.search(rf"def {name}" + ("" if cut else r"\b"), (REPO / file).read_text() if file else TESTS)
    )
    assert not missing, f"{page.name} names tests that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_link_resolves(page):
    broken = []
    for target in LINK.findall(_prose(_text(page))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: {resolved.name} has no heading #{anchor}")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_make_target_exists(page):
    named = {t for code in _code(_text(page)) for t in MAKE.findall(code)}
    missing = sorted(named - _make_targets())
    assert not missing, f"{page.name} names make targets the Makefile lacks: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_command_exists(page):
    md = _text(page)
    commands = [c for lang, body in _fences(md) if lang in ("bash", "sh", "shell") for c in _commands(body)]
    commands += [c for span in INLINE.findall(_prose(md)) for c in _commands(span)]
    problems = sorted({p for c in commands for p in _command_problems(c)})
    assert not problems, f"{page.name}: {problems}"
    missing = sorted(_pip_extras(md) - EXTRAS)
    assert not missing, f"{page.name} names extras pyproject.toml lacks: {missing}"


def test_the_command_check_can_fail():
    """The checks above are not vacuous: they reject what does not exist."""
    assert _command_problems(["vlp-data", "no-such-command"])
    assert _command_problems(["vlp-eval", "zeroshot", "--no-such-flag"])
    assert _command_problems(["vlp-nothing"])
    assert _command_problems(
        ["accelerate", "launch", "--config_file", "launch/accelerate/none.yaml", "-m", "vlp.train"]
    )
    assert _command_problems(["python", "-m", "vlp.no_such_module"])
    assert not _command_problems(["vlp-export", "convert", "ViT-B-32.pt", "--out", "x.safetensors"])
    assert _missing_path("configs/no_such_recipe.yaml") and not _missing_path("configs/studies/NAME.yaml")
    assert _unresolved("vlp.objectives.registry", "no_such_name") and not _unresolved("vlp.objectives.registry")


def test_the_readme_is_a_front_door():
    lines = _text(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move sections into docs/"
    assert lines[0] == "```bash" and lines[1].startswith("make demo") and lines[2].startswith("make test"), lines[:3]
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(_text(README))}
    unlinked = sorted(p.name for p in DOC_PAGES if p.resolve() not in linked)
    assert not unlinked, f"README.md does not link these docs pages: {unlinked}"


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_each_page_says_what_it_answers(page):
    """A title, then a paragraph of prose that asks the questions the page answers."""
    blocks = [b.strip() for b in _text(page).split("\n\n") if b.strip()]
    assert re.fullmatch(r"# \S.*", blocks[0]), f"{page.name} does not start with a '# title' line"
    first = blocks[1]
    assert not re.match(r"#|\||```|!\[|[-*>] |\d+\. | {4}", first), f"{page.name}: no opening paragraph: {first[:80]}"
    assert len(first.split()) >= 20 and "?" in first, f"{page.name}: the opening paragraph asks no questions"


def test_sections_the_code_refers_to_exist():
    """Comments and messages cite sections as README "Resume" or docs/launching.md "Resume": each cited
    heading is a heading (or starts one) of that page, or, for README, of README or any docs page."""
    cited = set()
    for path in REPO.glob("**/*"):
        if path.suffix not in (".py", ".yaml", ".md", ".sh", ".toml", ".json") and path.name != "Makefile":
            continue
        if any(part.startswith(".") or part.endswith(".egg-info") for part in path.relative_to(REPO).parts):
            continue
        if not path.is_file():
            continue
        for page, title in re.findall(r"\b(README|docs/\w+\.md)\b[,:]? \(?\"([^\"]{1,80})\"", path.read_text()):
            title = re.sub(r"\s*\n\s*#?\s*", " ", title)  # a title cut by a line break in a comment
            cited.add((str(path.relative_to(REPO)), page, title))
    assert cited, "no section citations found: the pattern is wrong"
    missing = []
    for source, page, title in sorted(cited):
        pages = PAGES if page == "README" else [REPO / page]
        if not any(h.startswith(title) for p in pages if p.is_file() for h in _headings(p)):
            missing.append(f'{source}: {page} "{title}"')
    assert not missing, f"cited sections with no such heading: {missing}"


# ----------------------------------------------------------------------------------------------- Layout


def _layout() -> list[str]:
    """The paths of docs/architecture.md's Layout tree: one name a line, two spaces of indent a level."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    tree = next(body for lang, body in _fences(section) if lang == "text")
    paths, stack = [], []
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"Layout: odd indent in {line!r}"
        depth = indent // 2
        assert depth <= len(stack), f"Layout: {line!r} is indented deeper than its folder"
        name = line.split()[0]
        stack[depth:] = [name.rstrip("/")]
        paths.append("/".join(stack) + ("/" if name.endswith("/") else ""))
    return paths


def test_the_layout_lists_every_module_and_nothing_else():
    listed = _layout()
    assert len(listed) > 50
    absent = sorted(p for p in listed if not (REPO / p).exists())
    modules = {
        str(p.relative_to(REPO))
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    missing = sorted(modules - set(listed))
    assert not missing and not absent, (
        "docs/architecture.md's Layout is out of date:\n"
        f"  modules the Layout does not list: {missing}\n"
        f"  names the Layout lists that the tree does not have: {absent}"
    )
