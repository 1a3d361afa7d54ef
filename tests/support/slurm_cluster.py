"""The one-node SLURM cluster of `make slurm-up`, as a session fixture (skipped with the reason
when none starts)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


CLUSTER = REPO / "scripts" / "slurm_cluster.sh"


SLURM_DIR = os.environ.get("MBT_SLURM_DIR", "/tmp/mbt-slurm")


@pytest.fixture(scope="session")
def slurm() -> Iterator[dict[str, str]]:
    """The environment that reaches the one-node cluster (started now unless one answers). A
    cluster the suite started is stopped when the session ends (its daemons would outlive
    `make test`); one that was already running is left as it was."""
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM runs its daemons as root; not root here")
    running = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0
    try:
        res = subprocess.run(
            ["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        pytest.skip("scripts/slurm_cluster.sh up: no cluster within 10 minutes")
    if res.returncode != 0:
        pytest.skip(f"scripts/slurm_cluster.sh up failed: {(res.stderr or res.stdout)[-800:]}")
    try:
        yield {**os.environ, "SLURM_CONF": f"{SLURM_DIR}/slurm.conf"}
    finally:
        if not running:
            subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)
