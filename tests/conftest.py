"""Shared fixtures: a tiny student built from the shipped dev samples, and CPU-safe env defaults.

Every path the tests read is defined in `paths.py`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))  # the helpers

from paths import SAMPLES_DIR  # noqa: E402

# Set before anything imports vLLM/wandb/HF: the CPU vLLM build fails its memory check without a
# KV-cache size, and worker processes would cost ~20 s per engine start; tests never reach a hub.
_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def pytest_configure(config: pytest.Config) -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _pin_xdist_worker()


def _pin_xdist_worker() -> None:
    """Under `pytest -n N` (`make test`), each worker and every process it starts (vLLM, TRAIN,
    CLI runs) keeps to its own share of the cores, one thread per core.

    Unpinned, two workers' torch and OpenMP thread pools spin on the same cores: a vLLM rollout
    beside another job was measured 8x slower. Pinned, the suite keeps both cores busy, where one
    worker left one of two idle most of the time (its time is mostly single-threaded start-up).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < count:
        return
    mine = cores[int(worker[2:]) :: count]
    os.sched_setaffinity(0, mine)
    os.environ["OMP_NUM_THREADS"] = str(len(mine))


def _xdist_group(item: pytest.Item) -> str:
    """Tests that share costly state run on one worker: the one-node SLURM cluster (one set of
    daemons), the session's clean tiny run, and each file (its module-scoped engines)."""
    if "slurm" in item.keywords:
        return "slurm"
    if "clean_tiny_run" in getattr(item, "fixturenames", ()):
        return "clean_tiny_run"
    return item.path.name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)


def _strings(node: object) -> Iterator[str]:
    """Every string in a JSON value: enough raw English to train a small BPE."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def sample_texts() -> list[str]:
    """Text of the real dev samples (JSON arrays and JSON lines alike)."""
    texts: list[str] = []
    for path in sorted(SAMPLES_DIR.rglob("*.json*")):
        raw = path.read_text(encoding="utf-8")
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if path.suffix == ".json":
            records = [json.loads(raw)]
        texts.extend(_strings(records))
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 Llama student with a BPE tokenizer trained on the real samples."""
    from mbt_online.sim.tiny_model import build_tiny_student

    out = tmp_path_factory.mktemp("tiny_student")
    return build_tiny_student(out, sample_texts(), hidden_size=64, layers=2, seed=0)


@pytest.fixture(scope="session")
def clean_tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted `mbt-online train` of tiny_runs.py's config (`CLEAN_RUN`: one round on
    4 training questions, in-process TRAIN, one training thread), run once per session: the
    reference a killed and resumed run (test_loop) and a staged run (test_staged) must each
    reproduce exactly. Read it, never write to it: other tests compare against it."""
    import subprocess
    import sys

    from tiny_runs import CLEAN_RUN, cli_env, tiny_overrides

    runs = tmp_path_factory.mktemp("clean")
    args = tiny_overrides(tiny_model_dir, runs, **CLEAN_RUN)
    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "train", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return runs / "tiny"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """A command run in process (typer's CliRunner) adds its console handler to the "mbt_online"
    logger on the runner's stream, closed when the command returns: a later test's log line, or
    a forked child's, would then fail on a closed file. The handlers come back after each test."""
    import logging

    logger = logging.getLogger("mbt_online")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:], logger.level = handlers, level
