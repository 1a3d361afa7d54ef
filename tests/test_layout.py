"""The house's rules, checked: the simulation stays out of real runs, rooms stay small and import
no circle, contracts sit at the bottom, the tests mirror the package, and nothing shipped or tested
reads outside the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from imports import (
    PACKAGE,
    cycles,
    graph,
    imported_names,
    module_name,
    package_modules,
    project_imports,
    room,
)

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# What a real run imports: the loop and everything a round calls (the CLI's train command too).
REAL_RUN = (
    "mbt_online.cli",
    "mbt_online.loop",
    "mbt_online.generation.vllm_engine",
    "mbt_online.training.trainer",
    "mbt_online.tasks.mixture",
    "mbt_online.tasks.hotpotqa",
    "mbt_online.tasks.musique",
    "mbt_online.tasks.twowiki",
    "mbt_online.tasks.world",
    "mbt_online.teachers.structured",
    "mbt_online.teachers.llm",
    "mbt_online.training.build",
    "mbt_online.evaluation.judges",
    "mbt_online.scoring.rewards",
)


def test_real_run_modules_never_import_the_simulation():
    """sim/ (simulated reasoner, bootstrap student, tiny models) is reached only through the
    bootstrap student's lazy import; importing the real-run path must not load it."""
    code = (
        "import importlib, sys\n"
        f"for name in {REAL_RUN!r}:\n"
        "    importlib.import_module(name)\n"
        "print('sim:', sorted(m for m in sys.modules if m.startswith('mbt_online.sim')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    # the last line: importing wandb may print a notice of its own before it
    assert out.stdout.strip().splitlines()[-1] == "sim: []", out.stdout


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_module_over_550_lines(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= 550, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"


def test_nothing_shipped_or_tested_reads_outside_the_repository():
    """A user's clone has no ../shared: configs and tests use the repository's own samples."""
    offenders = [
        str(p.relative_to(ROOT))
        for folder in (PACKAGE, ROOT / "tests", ROOT / "scripts")
        for p in folder.rglob("*")
        if p.suffix in {".py", ".yaml", ".yml"}
        and p != Path(__file__)
        and ("shared/data" in p.read_text() or '"shared"' in p.read_text())
    ]
    assert offenders == []


def test_no_import_circle_spans_two_rooms():
    """Modules of one room may lean on each other; across rooms the imports run one way, so a
    room can be read (and replaced) without the rooms that use it."""
    crossing = [sorted(c) for c in cycles(graph()) if len({room(m) for m in c}) > 1]
    assert crossing == []


def test_contracts_import_nothing_of_the_project():
    """The bottom layer: every stage imports it, so it imports none of them."""
    assert graph()["mbt_online.contracts"] == set()


def test_no_private_name_is_imported_across_modules():
    modules = package_modules()
    private = [
        f"{module_name(p)}: from {module} import {name}"
        for p in modules.values()
        for module, name in imported_names(p)
        if module.startswith("mbt_online")
        and name is not None
        and name.startswith("_")
        and f"{module}.{name}" not in modules
    ]
    assert private == []


def test_machine_facts_live_in_one_module():
    """Samplers and the staged launcher ask `hardware`, not each other."""
    edges = graph()
    samplers = [m for m in edges if room(m) == "generation"]
    assert not any(room(d) == "training" for m in samplers for d in edges[m])


TEST_FILES = sorted(TESTS.rglob("test_*.py"))


def test_tests_never_import_other_test_modules():
    """Shared helpers live in tests/support/; a test module is only ever collected."""
    offenders = [
        f"{p.relative_to(ROOT)}: {module}"
        for p in TEST_FILES + sorted((TESTS / "support").glob("*.py"))
        for module, _ in imported_names(p)
        if module.split(".")[-1].startswith("test_")
    ]
    assert offenders == []


def test_the_tests_mirror_the_package():
    """tests/<room>/test_*.py for a room of the package; helpers only in tests/support/ (and the
    fault suite's own harness in tests/faults/)."""
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    allowed = rooms | {"support", "faults", "data", "scripts"}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= allowed, folders - allowed
    stray = [
        str(p.relative_to(ROOT))
        for folder in rooms & folders
        for p in (TESTS / folder).glob("*.py")
        if not p.name.startswith("test_") and p.name != "conftest.py"
    ]
    assert stray == []


def test_test_file_names_are_unique():
    """The test folders are not packages: pytest imports each test file by its base name, so two
    files of one name in two rooms would stop the suite's collection."""
    names = [p.name for p in TEST_FILES]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_every_module_is_imported_by_some_test():
    """A module no test imports is a module no test checks (package markers and the
    `python -m` entry point aside)."""
    modules = package_modules()
    tested: set[str] = set()
    for p in TESTS.rglob("*.py"):
        tested |= project_imports(p, modules, follow=True)
    for p in TESTS.rglob("*.py"):  # modules named in strings: subprocess imports, patch targets
        text = p.read_text()
        tested |= {m for m in modules if f'"{m}"' in text or f"'{m}'" in text}
    untested = sorted(
        m
        for m, p in modules.items()
        if m not in tested and p.name != "__main__.py" and not _only_a_marker(p)
    )
    assert untested == []


def _only_a_marker(path: Path) -> bool:
    """A package's `__init__` that holds only a docstring (and imports)."""
    if path.name != "__init__.py":
        return False
    import ast

    body = ast.parse(path.read_text()).body
    return all(
        isinstance(n, (ast.Import, ast.ImportFrom))
        or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        for n in body
    )
