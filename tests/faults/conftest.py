"""Fixtures of the fault suite: quick stage folders (as in test_loop_flow) and the uninterrupted
run every faulted run must end identical to."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import Fakes, artifacts, quick_datasets, run, tiny_config

__all__ = ["quick_datasets"]  # autouse, module-scoped: every module of the suite


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted two-round run with the fake drivers."""
    cfg = tiny_config(tmp_path_factory.mktemp("reference"))
    return run(cfg, Fakes(cfg))


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> dict:
    """What the uninterrupted run left behind: every faulted run must end identical to it."""
    return artifacts(reference_run)
