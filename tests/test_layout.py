"""The house's rules, checked: the simulation stays out of real runs, rooms stay small, and
nothing shipped or tested reads outside the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mbt_online"

# What a real run imports: the loop and everything a round calls (the CLI's train command too).
REAL_RUN = (
    "mbt_online.cli",
    "mbt_online.loop",
    "mbt_online.engine",
    "mbt_online.train",
    "mbt_online.tasks.mixture",
    "mbt_online.tasks.hotpotqa",
    "mbt_online.tasks.musique",
    "mbt_online.tasks.twowiki",
    "mbt_online.tasks.world",
    "mbt_online.teachers.structured",
    "mbt_online.teachers.llm",
    "mbt_online.teachers.targets",
    "mbt_online.llm.judges",
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
def test_no_module_over_600_lines(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= 620, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"


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
